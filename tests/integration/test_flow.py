"""The whole flow with a real worker, on real Redis + PostgreSQL, on RabbitMQ + PostgreSQL
(quorum queues, native delayed delivery) and on the embedded defaults, against the
emulator over HTTP. Counts come from SQL and the emulator's stats."""

from __future__ import annotations

import collections
from typing import Any

import jsonschema
import pytest

from flexpipe.states import JobStatus
from tests.integration import callbacks
from tests.integration.conftest import make_stack
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["services", "services-rabbitmq", "embedded"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, emulator: str
) -> Stack:
    """This module's stack: the broker matters to the flow, so RabbitMQ too."""
    return make_stack(request, tmp_path_factory, request.param, emulator)

DOC = (
    "The Harbour Board met on Tuesday to approve a new ferry timetable. "
    "Evening sailings will run every thirty minutes from March. "
    "Residents asked for more bicycle space on the boats."
)


def creates_per_job(live: Stack) -> dict[str, int]:
    stats = live.emulator("/_emulator/stats")
    counts: dict[str, int] = collections.Counter()
    for record in stats["responses"].values():
        job_id = (record.get("metadata") or {}).get("flexpipe_job_id")
        if job_id:
            counts[job_id] += record["creates"]
    return counts


def response_stats(live: Stack, response_id: str) -> dict[str, Any]:
    return live.emulator(f"/_emulator/responses/{response_id}")


def test_background_flex_job_is_stored_with_its_poll_count(live: Stack) -> None:
    from flexpipe.tasks import api

    job_id = api.enqueue(DOC, instructions="Summarise in one sentence.", metadata={"doc": "a"})
    view = api.wait(job_id, timeout=60)
    assert view.status is JobStatus.COMPLETED, view.error
    result = view.result
    assert result is not None
    assert "ferry" in (result.output_text or "").lower()
    assert result.served_tier == "flex"
    assert result.usage.input_tokens > 0 and result.usage.output_tokens > 0
    assert result.usage.total_tokens == result.usage.input_tokens + result.usage.output_tokens
    assert result.output and result.output[0]["type"] == "message"
    job = view.job
    assert job.submitted_at and job.finished_at and job.response_id
    stats = response_stats(live, job.response_id)
    assert stats["creates"] == 1
    assert stats["polls"] == job.poll_count >= 1
    assert creates_per_job(live)[job_id] == 1


def test_blocking_mode_stores_without_polling(live: Stack) -> None:
    from flexpipe.tasks import api

    job_id = api.enqueue(DOC, mode="blocking")
    view = api.wait(job_id, timeout=60)
    assert view.status is JobStatus.COMPLETED, view.error
    assert view.job.poll_count == 0
    assert view.job.response_id is not None
    assert response_stats(live, view.job.response_id)["polls"] == 0
    assert response_stats(live, view.job.response_id)["background"] is False


def test_priority_tier_is_served_as_priority(live: Stack) -> None:
    from flexpipe.tasks import api

    view = api.wait(api.enqueue(DOC, service_tier="priority"), timeout=60)
    assert view.status is JobStatus.COMPLETED, view.error
    assert view.result is not None and view.result.served_tier == "priority"
    assert view.job.request.service_tier == "priority"


def test_items_and_chat_messages_input(live: Stack) -> None:
    from flexpipe.tasks import api

    items = [{"role": "user", "content": [{"type": "input_text", "text": DOC}]}]
    messages = [
        {"role": "system", "content": "You summarise council news."},
        {"role": "user", "content": DOC},
    ]
    ids = [api.enqueue(items), api.enqueue(messages=messages)]
    live.wait_terminal(ids)
    for job_id in ids:
        view = api.get(job_id)
        assert view.status is JobStatus.COMPLETED, view.error
        assert "ferry" in (view.output_text or "").lower()
    assert api.get(ids[1]).job.request.instructions == "You summarise council news."


def test_structured_output_is_parsed_and_valid(live: Stack) -> None:
    from flexpipe.tasks import api

    schema = {
        "type": "object",
        "properties": {
            "topic": {"type": "string", "enum": ["transport", "housing", "parks"]},
            "urgency": {"type": "integer", "minimum": 1, "maximum": 5},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "follow_up": {"type": "boolean"},
            "owner": {
                "type": "object",
                "properties": {"team": {"type": "string"}},
                "required": ["team"],
            },
        },
        "required": ["topic", "urgency", "tags", "follow_up", "owner"],
        "additionalProperties": False,
    }
    view = api.wait(api.enqueue(DOC, schema=schema, schema_name="triage"), timeout=60)
    assert view.status is JobStatus.COMPLETED, view.error
    jsonschema.validate(view.parsed, schema)
    assert view.parsed["topic"] in ("transport", "housing", "parks")


def test_idempotency_key_gives_one_job_and_one_create(live: Stack) -> None:
    from flexpipe.errors import IdempotencyConflict
    from flexpipe.tasks import api

    first = api.enqueue(DOC, idempotency_key="order-77-summary")
    second = api.enqueue(DOC, idempotency_key="order-77-summary")
    assert first == second
    # The same key for another request is refused, not silently dropped (issue 11).
    with pytest.raises(IdempotencyConflict):
        api.enqueue(DOC + " Different text.", idempotency_key="order-77-summary")
    live.wait_terminal([first])
    assert creates_per_job(live)[first] == 1


def test_callbacks_fire_exactly_once_per_job(live: Stack) -> None:
    from flexpipe.tasks import api

    ids = [api.enqueue(f"{DOC} Item {n}.", callback="tests.record_callback") for n in range(12)]
    signature_id = api.enqueue(
        DOC, callback={"task": "tests.record_callback", "kwargs": {"note": "sig"}}
    )
    live.wait_terminal([*ids, signature_id])
    live.wait_callbacks = None
    import time

    end = time.monotonic() + 20
    while time.monotonic() < end:
        counts = callbacks.counts(live.store.engine)
        if all(counts.get(j) for j in [*ids, signature_id]):
            break
        time.sleep(0.1)
    time.sleep(1.0)  # let any duplicate arrive before counting
    counts = callbacks.counts(live.store.engine)
    assert {j: counts.get(j, 0) for j in [*ids, signature_id]} == {
        j: 1 for j in [*ids, signature_id]
    }
    for job_id in ids:
        assert api.get(job_id).job.status is JobStatus.COMPLETED


def test_cancel_on_doubleword_stops_the_job_and_says_why(live: Stack) -> None:
    from flexpipe.tasks import api

    live.emulator("/_emulator/faults", {})  # nothing special; flex jobs take ~0.6 s
    job_id = api.enqueue(DOC * 3)
    live_job = api.get(job_id)
    view = api.cancel(live_job.id)
    assert view.status is JobStatus.CANCELLED
    assert view.error is not None
    # Whether it was sent yet or not, no poll chain outlives the cancel.
    live.wait_terminal([job_id])
    assert api.get(job_id).status is JobStatus.CANCELLED


def test_provider_failure_is_recorded_with_its_reason(live: Stack) -> None:
    from flexpipe.tasks import api

    live.emulator("/_emulator/faults", {"fail_rate": 1.0})
    job_id = api.enqueue(DOC)
    view = api.wait(job_id, timeout=60)
    assert view.status is JobStatus.FAILED
    assert view.job.error_code and view.job.error_message
    assert view.result is not None and view.result.error_message == view.job.error_message


def test_truncation_is_incomplete_with_partial_output(live: Stack) -> None:
    from flexpipe.tasks import api

    view = api.wait(api.enqueue(DOC, max_output_tokens=5), timeout=60)
    assert view.status is JobStatus.INCOMPLETE
    assert view.result is not None
    assert view.result.incomplete_reason == "max_output_tokens"
    assert 0 < len(view.result.output_text or "") <= 20


def test_apps_can_enqueue_by_task_name_without_importing_flexpipe(live: Stack) -> None:
    from celery import Celery

    other = Celery("someapp", broker=live.env["FLEXPIPE_BROKER_URL"])
    if live.env["FLEXPIPE_BROKER_URL"].startswith("filesystem"):
        from flexpipe.config.celery import broker_options
        from flexpipe.config.settings import get_settings

        other.conf.broker_transport_options = broker_options(get_settings())
        other.conf.broker_transport = "flexpipe.config.broker:Transport"
    if live.env["FLEXPIPE_BROKER_URL"].startswith("amqp"):
        # flexpipe's queues are quorum queues on RabbitMQ; a sender that declares them
        # must say so (docs/deploy.md).
        other.conf.task_create_missing_queue_type = "quorum"
    other.send_task(
        "flexpipe.enqueue",
        kwargs={"input": DOC, "idempotency_key": "by-name-1", "metadata": {"src": "other"}},
        queue=live.env["FLEXPIPE_QUEUE"],
    )
    import time

    end = time.monotonic() + 30
    job = None
    while time.monotonic() < end and job is None:
        job = next(
            (j for j in live.store.list_jobs(limit=200) if j.idempotency_key == "by-name-1"), None
        )
        time.sleep(0.1)
    assert job is not None, live.log_tail()
    live.wait_terminal([job.id])
    assert live.store.require_job(job.id).status is JobStatus.COMPLETED
    other.close()
