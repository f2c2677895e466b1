"""What the newsroom asks a model for, through flexpipe: summaries and section labels.

The only module that enqueues flexpipe work. Requests carry ids (the article's pk in the
callback signature), and idempotency keys make every enqueue safe to repeat; the results
come back through the callbacks in ``articles.tasks``.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

from django.utils import timezone

from articles import tasks as callbacks
from articles.models import Article, ClassificationRun, Section
from flexpipe.contrib.django import enqueue_on_commit
from flexpipe.errors import JobNotFound
from flexpipe.tasks import api as flexpipe

SUMMARY_INSTRUCTIONS = "Summarise this news article in two sentences."
CLASSIFY_INSTRUCTIONS = (
    "Classify this news article into exactly one newspaper section: "
    + ", ".join(Section.values)
    + '. Answer with JSON like {"label": "science"}.'
)
LABEL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"label": {"type": "string", "enum": Section.values}},
    "required": ["label"],
    "additionalProperties": False,
}


def summarise_on_commit(article: Article) -> None:
    """Enqueue the article's summary once the current transaction commits.

    Until then the row is invisible to other connections, so a job enqueued earlier could
    finish before the row exists, and would reference a row that a rollback removes. The
    request is validated now; the job id is saved on the article after the commit.
    """
    enqueue_on_commit(
        article.body,
        instructions=SUMMARY_INSTRUCTIONS,
        metadata={"article": str(article.pk)},
        idempotency_key=f"article-{article.pk}-summary",
        callback=callbacks.summary_ready.s(article_id=article.pk),
        then=functools.partial(save_job_id, article.pk),
    )


def save_job_id(article_id: int, job_id: str) -> None:
    # Only the job id: the callback may already have stored the final status.
    Article.objects.filter(pk=article_id).update(flexpipe_job_id=job_id, updated_at=timezone.now())


def request_summary(article_id: int) -> str:
    """Enqueue the summary of a committed article; return the flexpipe job id.

    Safe to call again (same idempotency key, same job): e.g. to retry articles whose
    enqueue failed and that still have no job id.
    """
    article = Article.objects.get(pk=article_id)
    job_id = flexpipe.enqueue(
        article.body,
        instructions=SUMMARY_INSTRUCTIONS,
        metadata={"article": str(article.pk)},
        idempotency_key=f"article-{article.pk}-summary",
        callback=callbacks.summary_ready.s(article_id=article.pk),
    )
    # Only the job id: the callback may already have stored the final status.
    Article.objects.filter(pk=article.pk).update(flexpipe_job_id=job_id, updated_at=timezone.now())
    return job_id


def live_summary_status(article: Article) -> str:
    """The status the callback stored, or flexpipe's live status while the job runs."""
    if article.summary_status != "pending" or not article.flexpipe_job_id:
        return article.summary_status
    try:
        return flexpipe.get(article.flexpipe_job_id).status.value
    except JobNotFound:
        return article.summary_status


def classify_unlabelled(limit: int) -> tuple[str | None, int]:
    """Enqueue unlabelled articles (oldest first) as one bulk job; return (bulk id, count).

    Each item's callback writes its label; the bulk's completion callback records the run.
    The idempotency key covers the text, so text already sent is not sent again.
    """
    articles = list(
        Article.objects.filter(label="").order_by("pk").values_list("pk", "body")[:limit]
    )
    if not articles:
        return None, 0
    bulk_id = flexpipe.enqueue_many(
        (
            {
                "input": body,
                "metadata": {"article": str(pk)},
                "idempotency_key": f"article-{pk}-label-{digest(body)}",
                "callback": callbacks.label_ready.s(article_id=pk),
            }
            for pk, body in articles
        ),
        name="classify-articles",
        on_complete=callbacks.classification_done.name,
        instructions=CLASSIFY_INSTRUCTIONS,
        schema=LABEL_SCHEMA,
        schema_name="article_section",
    )
    ClassificationRun.objects.get_or_create(
        bulk_id=bulk_id, defaults={"total": flexpipe.get_bulk(bulk_id).total}
    )
    return bulk_id, len(articles)


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
