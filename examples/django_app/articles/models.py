"""The newsroom's tables: articles, classification runs, and a log of flexpipe callbacks."""

from __future__ import annotations

from django.db import models


class Section(models.TextChoices):
    """The labels the model may give an article (the enum of the classification schema)."""

    POLITICS = "politics"
    BUSINESS = "business"
    SCIENCE = "science"
    SPORT = "sport"
    CULTURE = "culture"


class Article(models.Model):
    title = models.CharField(max_length=200)
    body = models.TextField()
    summary = models.TextField(blank=True)
    #: "pending" until the callback stores flexpipe's final status ("completed", "failed"…).
    summary_status = models.CharField(max_length=20, default="pending")
    #: The summary's flexpipe job; empty until the enqueue after commit has run.
    flexpipe_job_id = models.CharField(max_length=32, blank=True, db_index=True)
    label = models.CharField(max_length=20, choices=Section.choices, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.title


class ClassificationRun(models.Model):
    """One ``classify_articles`` bulk job; the counts are filled in by its completion callback."""

    bulk_id = models.CharField(max_length=32, unique=True)
    total = models.PositiveIntegerField(default=0)
    completed = models.PositiveIntegerField(default=0)
    #: Items that ended without a label: failed, expired, cancelled or incomplete.
    failed = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)


class CallbackReceipt(models.Model):
    """One callback flexpipe delivered: which task ran, for which job or bulk id.

    A callback message can be delivered again (a worker dying mid-task), so the tasks are
    idempotent; this log shows how often each really arrived.
    """

    task = models.CharField(max_length=100)
    flexpipe_id = models.CharField(max_length=32, db_index=True)
    received_at = models.DateTimeField(auto_now_add=True)
