"""Unmanaged models of flexpipe's tables, for the admin (read-only).

The tables belong to flexpipe's Alembic migrations (``flexpipe.schema``), not to Django:
``managed = False``, so Django never creates, alters or flushes them. Write through
flexpipe's API (``flexpipe.retry``, ``flexpipe.cancel``), never through these models.
"""

from __future__ import annotations

import json
from typing import Any

from django.db import models


class StoredJSON(models.JSONField):
    """A JSON column written by SQLAlchemy: text on SQLite, ``json`` (already decoded by
    the driver) on PostgreSQL."""

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        if value is None or not isinstance(value, str):
            return value
        try:
            return json.loads(value)
        except ValueError:
            return value


class Bulk(models.Model):
    """A bulk job: many jobs counted as one (``flexpipe_bulks``)."""

    id = models.CharField(primary_key=True, max_length=32)
    name = models.CharField(max_length=255, null=True)
    total = models.IntegerField()
    done = models.IntegerField()
    completed = models.IntegerField()
    failed = models.IntegerField()
    incomplete = models.IntegerField()
    cancelled = models.IntegerField()
    expired = models.IntegerField()
    on_complete = StoredJSON(null=True)
    created_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True)

    class Meta:
        managed = False
        db_table = "flexpipe_bulks"
        ordering = ("-created_at",)
        verbose_name = "bulk job"

    def __str__(self) -> str:
        return f"{self.name or 'bulk'} {self.id[:12]}"

    @property
    def progress(self) -> str:
        percent = 100 * self.done // self.total if self.total else 100
        return f"{self.done}/{self.total} ({percent}%)"


class Job(models.Model):
    """One request to the provider and its state (``flexpipe_jobs``)."""

    id = models.CharField(primary_key=True, max_length=32)
    status = models.CharField(max_length=16)
    idempotency_key = models.CharField(max_length=255, null=True)
    bulk = models.ForeignKey(
        Bulk, on_delete=models.DO_NOTHING, db_constraint=False, null=True, related_name="jobs"
    )
    model = models.CharField(max_length=256)
    requested_tier = models.CharField(max_length=16)
    mode = models.CharField(max_length=16)
    request = StoredJSON()
    callback = StoredJSON(null=True)
    response_id = models.CharField(max_length=128, null=True)
    attempt = models.IntegerField()
    poll_count = models.IntegerField()
    next_poll_at = models.DateTimeField(null=True)
    parked = models.BooleanField()
    deadline_at = models.DateTimeField(null=True)
    error_code = models.CharField(max_length=64, null=True)
    error_message = models.TextField(null=True)
    created_at = models.DateTimeField()
    submitted_at = models.DateTimeField(null=True)
    started_at = models.DateTimeField(null=True)
    finished_at = models.DateTimeField(null=True)
    callback_sent_at = models.DateTimeField(null=True)
    updated_at = models.DateTimeField()

    class Meta:
        managed = False
        db_table = "flexpipe_jobs"
        ordering = ("-created_at",)

    def __str__(self) -> str:
        return self.id


class Result(models.Model):
    """What the provider returned for a finished job (``flexpipe_results``)."""

    job = models.OneToOneField(
        Job,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        primary_key=True,
        related_name="result",
    )
    status = models.CharField(max_length=16)
    response_id = models.CharField(max_length=128, null=True)
    output = StoredJSON(null=True)
    parsed = StoredJSON(null=True)
    input_tokens = models.IntegerField()
    cached_tokens = models.IntegerField()
    output_tokens = models.IntegerField()
    reasoning_tokens = models.IntegerField()
    total_tokens = models.IntegerField()
    served_tier = models.CharField(max_length=16, null=True)
    error_code = models.CharField(max_length=64, null=True)
    error_message = models.TextField(null=True)
    incomplete_reason = models.CharField(max_length=64, null=True)
    latency_s = models.FloatField(null=True)
    stored_at = models.DateTimeField()

    class Meta:
        managed = False
        db_table = "flexpipe_results"
        ordering = ("-stored_at",)

    @property
    def output_text(self) -> str | None:
        """The text of the output's messages (stored once, inside ``output``)."""
        from flexpipe.models import output_text_of

        return output_text_of(self.output)

    def __str__(self) -> str:
        return f"result of {self.job_id}"
