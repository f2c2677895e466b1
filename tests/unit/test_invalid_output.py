"""Structured output that does not match its schema: asked for once more, then failed as
``invalid_output``; every attempt stays in the history. Scripted provider, real SQLite."""

from __future__ import annotations

from typing import Any

import pytest

from flexpipe.flow import INVALID_OUTPUT, Flow, FlowSettings
from flexpipe.models import build_request
from flexpipe.policy import PollPolicy, RetryPolicy
from flexpipe.states import JobStatus
from flexpipe.store import NewJob, Store
from tests.unit.test_flow import QUEUED, ScriptedClient, done

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"label": {"type": "string", "enum": ["bug", "billing"]}},
    "required": ["label"],
    "additionalProperties": False,
}
GOOD = '{"label": "bug"}'
OFF_ENUM = '{"label": "weather"}'
NOT_JSON = "It is a bug."


@pytest.fixture
def flow_for(store: Store):
    def make(client: ScriptedClient, **kw: Any) -> Flow:
        settings = FlowSettings(
            poll=PollPolicy(first_delay=1, jitter=0),
            retry=RetryPolicy(jitter=0),
            learn_latency=False,
            **kw,
        )
        return Flow(store, client, settings)  # type: ignore[arg-type]

    return make


def _add(store: Store, **kw: Any) -> str:
    request = build_request("The app crashes.", model="m", schema=SCHEMA, **kw)
    return store.add_job(NewJob(request=request, callback={"task": "cb"}))[0]


def _run_attempt(flow: Flow, job_id: str):
    """Submit, then poll once: the step after the provider's terminal answer."""
    step = flow.submit(job_id)
    assert step.kind == "poll", step
    return flow.poll(job_id, step.seq)


def test_invalid_output_is_asked_for_again_and_the_second_answer_is_kept(
    store, flow_for
) -> None:
    client = ScriptedClient(creates=[QUEUED, QUEUED], reads=[done(OFF_ENUM), done(GOOD)])
    flow = flow_for(client)
    job_id = _add(store)

    step = _run_attempt(flow, job_id)
    assert (step.kind, step.reason) == ("submit", INVALID_OUTPUT)
    job = store.require_job(job_id)
    assert job.status is JobStatus.PENDING and job.attempt == 2
    assert job.response_id is None and store.get_result(job_id) is None

    step = _run_attempt(flow, job_id)
    assert step.kind == "done" and step.callback == {"task": "cb"}
    job = store.require_job(job_id)
    assert job.status is JobStatus.COMPLETED and job.error_code is None
    assert store.get_result(job_id).parsed == {"label": "bug"}
    assert client.calls == ["create", "retrieve", "create", "retrieve"]
    history = store.attempts(job_id)
    assert [row["attempt"] for row in history] == [1, 2]
    assert history[0]["error_message"].startswith(f"{INVALID_OUTPUT}: output does not match")
    assert history[1]["status"] == "completed"


def test_a_second_invalid_answer_fails_the_job_as_invalid_output(store, flow_for) -> None:
    client = ScriptedClient(creates=[QUEUED, QUEUED], reads=[done(NOT_JSON), done(OFF_ENUM)])
    flow = flow_for(client)
    job_id = _add(store)

    assert _run_attempt(flow, job_id).kind == "submit"
    step = _run_attempt(flow, job_id)
    assert step.kind == "done" and step.reason == ""
    job = store.require_job(job_id)
    assert job.status is JobStatus.FAILED and job.error_code == INVALID_OUTPUT
    assert "'weather' is not one of" in (job.error_message or "")
    result = store.get_result(job_id)
    assert result.output_text == OFF_ENUM and result.parsed is None
    assert client.calls.count("create") == 2
    first, second = store.attempts(job_id)
    assert "output is not JSON" in first["error_message"]
    assert second["error_code"] == INVALID_OUTPUT


def test_no_retry_when_the_setting_is_zero(store, flow_for) -> None:
    client = ScriptedClient(creates=[QUEUED], reads=[done(OFF_ENUM)])
    flow = flow_for(client, invalid_output_retries=0)
    job_id = _add(store)
    assert _run_attempt(flow, job_id).kind == "done"
    assert store.require_job(job_id).error_code == INVALID_OUTPUT
    assert client.calls == ["create", "retrieve"]


def test_two_retries_when_the_setting_says_two(store, flow_for) -> None:
    client = ScriptedClient(
        creates=[QUEUED] * 3, reads=[done(NOT_JSON), done(OFF_ENUM), done(GOOD)]
    )
    flow = flow_for(client, invalid_output_retries=2)
    job_id = _add(store)
    assert [_run_attempt(flow, job_id).kind for _ in range(3)] == ["submit", "submit", "done"]
    assert store.require_job(job_id).status is JobStatus.COMPLETED


def test_max_attempts_bounds_the_retry(store, flow_for) -> None:
    client = ScriptedClient(creates=[QUEUED], reads=[done(OFF_ENUM)])
    flow = flow_for(client, max_attempts=1)
    job_id = _add(store)
    assert _run_attempt(flow, job_id).kind == "done"
    assert store.require_job(job_id).error_code == INVALID_OUTPUT


def test_attempts_made_for_other_reasons_do_not_use_up_the_retry(store, flow_for) -> None:
    client = ScriptedClient(creates=[QUEUED, QUEUED], reads=[done(OFF_ENUM), done(GOOD)])
    flow = flow_for(client)
    job_id = _add(store)
    # A redrive (e.g. ``flexpipe retry`` of a cancelled job) made attempt 2 already.
    flow.cancel(job_id)
    assert store.restart(job_id, reason="redriven") == 2
    assert _run_attempt(flow, job_id).kind == "submit"
    assert _run_attempt(flow, job_id).kind == "done"
    job = store.require_job(job_id)
    assert job.status is JobStatus.COMPLETED and job.attempt == 3


def test_an_answer_at_submit_time_is_retried_too(store, flow_for) -> None:
    # Blocking mode: the create call returns the finished response.
    client = ScriptedClient(creates=[done(NOT_JSON), done(GOOD)])
    flow = flow_for(client)
    job_id = _add(store, mode="blocking")
    assert flow.submit(job_id).kind == "submit"
    assert flow.submit(job_id).kind == "done"
    assert store.get_result(job_id).parsed == {"label": "bug"}
    assert client.calls == ["create", "create"]


def test_a_late_poll_of_the_first_attempt_does_nothing(store, flow_for) -> None:
    client = ScriptedClient(creates=[QUEUED], reads=[done(OFF_ENUM)])
    flow = flow_for(client)
    job_id = _add(store)
    first = flow.submit(job_id)
    assert flow.poll(job_id, first.seq).kind == "submit"
    # The same poll message delivered again (redelivery) finds a newer chain.
    assert flow.poll(job_id, first.seq).kind == "stop"
    assert client.calls == ["create", "retrieve"]


def test_cancel_that_finds_invalid_output_fails_instead_of_asking_again(store) -> None:
    class CancelReturnsOutput(ScriptedClient):
        def cancel(self, response_id):
            self.calls.append("cancel")
            return done(OFF_ENUM)

    client = CancelReturnsOutput(creates=[QUEUED])
    flow = Flow(store, client, FlowSettings(learn_latency=False))  # type: ignore[arg-type]
    job_id = _add(store)
    flow.submit(job_id)
    assert flow.cancel(job_id).kind == "done"
    job = store.require_job(job_id)
    assert job.status is JobStatus.FAILED and job.error_code == INVALID_OUTPUT
    assert client.calls == ["create", "cancel"]


def test_a_bulk_counts_a_retried_item_once(store, flow_for) -> None:
    client = ScriptedClient(
        creates=[QUEUED, QUEUED, QUEUED], reads=[done(OFF_ENUM), done(GOOD), done(GOOD)]
    )
    flow = flow_for(client)
    request = build_request("The app crashes.", model="m", schema=SCHEMA)
    bulk_id, pairs = store.add_bulk(
        [NewJob(request=request), NewJob(request=request)],
        name="b",
        on_complete={"task": "done"},
    )
    retried, plain = (job_id for job_id, _ in pairs)
    assert _run_attempt(flow, retried).kind == "submit"
    bulk = store.get_bulk(bulk_id)
    assert (bulk.done, bulk.pending) == (0, 2)
    assert _run_attempt(flow, plain).kind == "done"
    last = _run_attempt(flow, retried)
    assert last.kind == "done" and last.bulk_callback == {"task": "done"}
    bulk = store.get_bulk(bulk_id)
    assert (bulk.total, bulk.done, bulk.completed, bulk.failed) == (2, 2, 2, 0)
