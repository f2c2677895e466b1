"""The callbacks flexpipe sends when a job (or a bulk job) ends; run by the newsroom's worker.

Each reads the outcome from flexpipe by id and writes it to the article. flexpipe sends
one message per outcome (its task id is fixed by the job), but like any ``acks_late``
task a message runs again if the worker running it dies, so they are idempotent: they
overwrite, never append.
"""

from __future__ import annotations

import logging

from celery import shared_task
from django.utils import timezone

from articles.models import Article, CallbackReceipt, ClassificationRun, Section
from flexpipe.states import JobStatus
from flexpipe.tasks import api as flexpipe

log = logging.getLogger("articles.tasks")


@shared_task
def summary_ready(job_id: str, article_id: int) -> str:
    """Store a finished summary job's text and status on its article."""
    view = flexpipe.get(job_id)
    CallbackReceipt.objects.create(task="summary_ready", flexpipe_id=job_id)
    if view.status is not JobStatus.COMPLETED:
        log.warning("article %s: summary job %s ended %s", article_id, job_id, view.error)
    Article.objects.filter(pk=article_id).update(
        summary=view.output_text or "",
        summary_status=view.status.value,
        flexpipe_job_id=job_id,
        updated_at=timezone.now(),
    )
    return view.status.value


@shared_task
def label_ready(job_id: str, article_id: int) -> str:
    """Store the label of a finished classification job on its article."""
    view = flexpipe.get(job_id)
    CallbackReceipt.objects.create(task="label_ready", flexpipe_id=job_id)
    label = view.parsed.get("label") if isinstance(view.parsed, dict) else None
    if view.status is not JobStatus.COMPLETED or label not in Section.values:
        log.warning("article %s: no label from job %s (%s)", article_id, job_id, view.error)
        return view.status.value
    Article.objects.filter(pk=article_id).update(label=label, updated_at=timezone.now())
    return str(label)


@shared_task
def classification_done(bulk_id: str) -> str:
    """Record a finished ``classify_articles`` run: sent once, when its last item ended."""
    bulk = flexpipe.get_bulk(bulk_id)
    CallbackReceipt.objects.create(task="classification_done", flexpipe_id=bulk_id)
    ClassificationRun.objects.update_or_create(
        bulk_id=bulk_id,
        defaults={
            "total": bulk.total,
            "completed": bulk.completed,
            "failed": bulk.done - bulk.completed,
            "finished_at": bulk.finished_at or timezone.now(),
        },
    )
    return f"{bulk.completed}/{bulk.total} labelled"
