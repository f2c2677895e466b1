"""Articles through the view: summaries enqueued after commit, run by a real flexpipe
worker against the emulator, stored by the newsroom's own Celery worker."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import pytest
from django.db import transaction
from django.test import Client
from harness import Newsroom

from articles.models import Article, CallbackReceipt
from flexpipe.tasks import api as flexpipe

DOC = (
    "The Harbour Board met on Tuesday to approve a new ferry timetable. "
    "Evening sailings will run every thirty minutes from March. "
    "Residents asked for more bicycle space on the boats."
)


def post(client: Client, data: Any) -> Any:
    return client.post("/articles/", data, content_type="application/json")


def summary_stored(pk: int) -> Callable[[], bool]:
    return lambda: Article.objects.get(pk=pk).summary_status != "pending"


def test_new_article_is_summarised_and_its_callback_runs_once(
    newsroom: Newsroom, client: Client
) -> None:
    response = post(client, {"title": "Ferries", "body": DOC})
    assert response.status_code == 201, response.content
    created = response.json()
    assert created["job_id"], "enqueued after commit, before the response"
    assert created["summary_status"] in {"pending", "submitted", "in_progress", "completed"}

    pk = created["id"]
    newsroom.wait_until(summary_stored(pk), "summary stored on the article")
    article = Article.objects.get(pk=pk)
    assert article.summary_status == "completed"
    view = flexpipe.get(article.flexpipe_job_id)
    assert article.summary == view.output_text
    assert "ferry" in article.summary.lower()
    assert view.job.request.metadata["article"] == str(pk)

    shown = client.get(f"/articles/{pk}/").json()
    assert shown["summary"] == article.summary
    assert shown["summary_status"] == "completed"
    assert shown["job_id"] == article.flexpipe_job_id

    newsroom.settle()
    receipts = CallbackReceipt.objects.filter(flexpipe_id=article.flexpipe_job_id)
    assert list(receipts.values_list("task", flat=True)) == ["summary_ready"]


def test_summary_is_enqueued_only_when_the_article_is_committed(
    newsroom: Newsroom, client: Client
) -> None:
    with transaction.atomic():
        pk = post(client, {"title": "Ferries", "body": DOC}).json()["id"]
        assert Article.objects.get(pk=pk).flexpipe_job_id == ""  # still uncommitted
    article = Article.objects.get(pk=pk)
    assert article.flexpipe_job_id, "enqueued by the commit"
    newsroom.wait_until(summary_stored(pk), "summary stored on the article")
    assert Article.objects.get(pk=pk).summary_status == "completed"


@pytest.mark.django_db
def test_invalid_article_is_rejected_naming_the_field(
    client: Client, django_capture_on_commit_callbacks: Callable[..., AbstractContextManager[Any]]
) -> None:
    with django_capture_on_commit_callbacks() as callbacks:
        response = post(client, {"title": "", "body": "x" * 100_001})
        not_json = client.post("/articles/", "{oops", content_type="application/json")
        not_object = post(client, ["Ferries", DOC])
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert {field: e[0]["code"] for field, e in errors.items()} == {
        "title": "required",
        "body": "max_length",
    }
    for bad in (not_json, not_object):
        assert bad.status_code == 400
        assert bad.json()["errors"]["__all__"][0]["message"] == "expected a JSON object"
    assert callbacks == []
    assert not Article.objects.exists()
    assert client.get("/articles/999/").status_code == 404
