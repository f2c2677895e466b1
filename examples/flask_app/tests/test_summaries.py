"""The Flask example end to end: HTTP through Flask's test client, the pipeline through a
real flexpipe worker subprocess and the emulator over HTTP. Counts come from SQL."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from examples.flask_app import completions

DOC = (
    "The Harbour Board met on Tuesday to approve a new ferry timetable. "
    "Evening sailings will run every thirty minutes from March. "
    "Residents asked for more bicycle space on the boats."
)
TERMINAL = {"completed", "failed", "cancelled", "incomplete", "expired"}


def submit(client: FlaskClient, body: Any, **headers: str) -> TestResponse:
    return client.post("/summaries", json=body, headers=headers)


def json_of(response: TestResponse) -> dict[str, Any]:
    body = response.get_json()
    assert isinstance(body, dict), response.data
    return body


def wait_done(client: FlaskClient, status_url: str, timeout: float = 30.0) -> dict[str, Any]:
    """GET the status URL until the job is terminal; return the last body."""
    end = time.monotonic() + timeout
    while True:
        response = client.get(status_url)
        body = json_of(response)
        assert response.status_code == 200, body
        if body["status"] in TERMINAL or time.monotonic() > end:
            return body
        time.sleep(0.05)


def callback_calls(database_url: str, job_id: str, timeout: float = 20.0) -> int:
    """How often the callback ran for ``job_id``: wait for the first call, then for any
    duplicate (the sweeper would re-send an unmarked callback within ~0.7 s here)."""
    end = time.monotonic() + timeout
    while not completions.counts(database_url).get(job_id) and time.monotonic() < end:
        time.sleep(0.05)
    time.sleep(1.5)
    return completions.counts(database_url).get(job_id, 0)


def test_submitted_summary_completes_and_calls_back_once(
    client: FlaskClient, app_database: str
) -> None:
    response = submit(client, {"text": DOC, "instructions": "Summarise in one sentence."})
    created = json_of(response)
    assert response.status_code == 202, created
    job_id = created["id"]
    assert created["status_url"] == response.headers["Location"] == f"/summaries/{job_id}"

    body = wait_done(client, created["status_url"])
    assert body["status"] == "completed", body
    assert body["id"] == job_id
    assert "ferry" in body["summary"].lower()
    assert body["error"] is None
    tokens = body["tokens"]
    assert tokens["input"] > 0 and tokens["output"] > 0
    assert tokens["total"] == tokens["input"] + tokens["output"]
    assert callback_calls(app_database, job_id) == 1


def test_pending_summary_has_no_output_yet(client: FlaskClient) -> None:
    status_url = json_of(submit(client, {"text": DOC}))["status_url"]
    body = json_of(client.get(status_url))
    assert body["status"] in {"pending", "submitted", "in_progress"}
    assert body["summary"] is None and body["tokens"] is None
    assert wait_done(client, status_url)["status"] == "completed"


@pytest.mark.parametrize(
    ("body", "headers", "field"),
    [
        ({}, {}, "text"),
        ({"text": 42}, {}, "text"),
        ({"text": ""}, {}, "text"),
        ({"text": "x" * 400_001}, {}, "text"),
        ({"text": DOC, "instructions": 7}, {}, "instructions"),
        ({"text": DOC}, {"Idempotency-Key": "k" * 256}, "Idempotency-Key"),
        (["not", "an", "object"], {}, "body"),
    ],
    ids=["missing", "not-a-string", "empty", "too-long", "instructions", "key", "body"],
)
def test_bad_input_is_400_naming_the_field(
    client: FlaskClient, body: Any, headers: dict[str, str], field: str
) -> None:
    response = submit(client, body, **headers)
    error = json_of(response)
    assert response.status_code == 400
    assert error["error"] == "invalid_request"
    assert error["field"] == field
    assert error["message"]


def test_body_that_is_not_json_is_400(client: FlaskClient) -> None:
    response = client.post("/summaries", data="text=hello", content_type="text/plain")
    assert response.status_code == 400
    assert json_of(response)["field"] == "body"


def test_unknown_id_is_404(client: FlaskClient) -> None:
    response = client.get(f"/summaries/{uuid.uuid4().hex}")
    assert response.status_code == 404
    assert json_of(response)["error"] == "not_found"


def test_idempotency_key_returns_the_same_job(client: FlaskClient, app_database: str) -> None:
    key = f"doc-{uuid.uuid4().hex}"
    first, again, other = (
        json_of(submit(client, {"text": DOC}, **{"Idempotency-Key": k}))
        for k in (key, key, f"{key}-other")
    )
    assert again["id"] == first["id"] != other["id"]

    for created in (first, other):
        assert wait_done(client, created["status_url"])["status"] == "completed"
    assert callback_calls(app_database, first["id"]) == 1
