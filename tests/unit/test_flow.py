"""The flow's decisions, with a scripted provider (the integration tests use the emulator)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from flexpipe import errors
from flexpipe.client import ProviderResponse
from flexpipe.flow import Flow, FlowSettings, parse_structured
from flexpipe.models import Usage, build_request
from flexpipe.policy import PollPolicy, RetryPolicy
from flexpipe.states import JobStatus
from flexpipe.store import NewJob, Store


@dataclass
class ScriptedClient:
    """Answers from a script; an exception in the script is raised."""

    creates: list[object] = field(default_factory=list)
    reads: list[object] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)

    def create(self, job_id, request, *, attempt=1):
        self.calls.append("create")
        return self._next(self.creates)

    def retrieve(self, response_id):
        self.calls.append("retrieve")
        return self._next(self.reads)

    def cancel(self, response_id):
        self.calls.append("cancel")
        raise errors.RequestRejected("HTTP 404: no cancel route", status_code=404)

    @staticmethod
    def _next(script):
        item = script.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item


def done(text="ok", status="completed", **kw) -> ProviderResponse:
    return ProviderResponse(
        id="resp_1",
        status=status,
        output_text=text,
        usage=Usage(input_tokens=3, output_tokens=2, total_tokens=5),
        **kw,
    )


QUEUED = ProviderResponse(id="resp_1", status="queued")
RUNNING = ProviderResponse(id="resp_1", status="in_progress")


@pytest.fixture
def flow_for(store: Store):
    def make(client: ScriptedClient, **kw) -> Flow:
        settings = FlowSettings(
            poll=PollPolicy(first_delay=1, jitter=0),
            retry=RetryPolicy(jitter=0),
            park_after=30,
            learn_latency=False,
            **kw,
        )
        return Flow(store, client, settings)  # type: ignore[arg-type]

    return make


def _add(store: Store, **kw) -> str:
    request = build_request("hello", model="m", **kw)
    return store.add_job(NewJob(request=request, callback={"task": "cb"}))[0]


def test_happy_path(store, flow_for) -> None:
    client = ScriptedClient(creates=[QUEUED], reads=[RUNNING, done("summary")])
    flow = flow_for(client)
    job_id = _add(store)
    step = flow.submit(job_id)
    assert step.kind == "poll" and step.delay == 1 and not step.parked
    step = flow.poll(job_id, step.seq)
    assert step.kind == "poll" and step.delay == 1.5
    assert store.require_job(job_id).status is JobStatus.IN_PROGRESS
    step = flow.poll(job_id, step.seq)
    assert step.kind == "done" and step.callback == {"task": "cb"}
    result = store.get_result(job_id)
    assert result is not None and result.output_text == "summary"
    assert result.usage.total_tokens == 5
    assert store.require_job(job_id).poll_count == 2
    assert client.calls == ["create", "retrieve", "retrieve"]


def test_second_submit_never_calls_the_provider(store, flow_for) -> None:
    client = ScriptedClient(creates=[QUEUED])
    flow = flow_for(client)
    job_id = _add(store)
    flow.submit(job_id)
    assert flow.submit(job_id).kind == "stop"
    assert client.calls == ["create"]


def test_stale_chain_stops_without_reading(store, flow_for) -> None:
    client = ScriptedClient(creates=[QUEUED], reads=[RUNNING])
    flow = flow_for(client)
    job_id = _add(store)
    first = flow.submit(job_id)
    second = flow.poll(job_id, first.seq)
    assert flow.poll(job_id, first.seq).kind == "stop"
    assert client.calls == ["create", "retrieve"]
    assert second.seq == first.seq + 1


def test_transient_submit_errors_retry_with_retry_after(store, flow_for) -> None:
    client = ScriptedClient(creates=[errors.RateLimited("busy", retry_after=7), QUEUED])
    flow = flow_for(client)
    job_id = _add(store)
    step = flow.submit(job_id)
    assert step.kind == "retry" and step.delay == 7 and step.failures == 1
    assert store.require_job(job_id).status is JobStatus.PENDING
    assert flow.submit(job_id, step.failures).kind == "poll"


def test_permanent_submit_error_fails_with_the_providers_message(store, flow_for) -> None:
    client = ScriptedClient(creates=[errors.RequestRejected("HTTP 400: bad model")])
    flow = flow_for(client)
    job_id = _add(store)
    assert flow.submit(job_id).kind == "done"
    job = store.require_job(job_id)
    assert job.status is JobStatus.FAILED
    assert job.error_code == "invalid_request"
    assert job.error_message == "HTTP 400: bad model"


def test_not_found_is_retried_a_bounded_number_of_times(store, flow_for) -> None:
    reads = [errors.ResponseNotFound("HTTP 404") for _ in range(3)]
    client = ScriptedClient(creates=[QUEUED], reads=reads)
    flow = flow_for(client, max_not_found=3)
    job_id = _add(store)
    step = flow.submit(job_id)
    step = flow.poll(job_id, step.seq)
    step = flow.poll(job_id, step.seq, step.failures)
    assert step.kind == "poll" and step.failures == 2
    step = flow.poll(job_id, step.seq, step.failures)
    assert step.kind == "done"
    job = store.require_job(job_id)
    assert job.status is JobStatus.FAILED and job.error_code == "response_not_found"
    assert "3 reads in a row" in (job.error_message or "")


def test_gone_before_any_read_fails_clearly(store, flow_for) -> None:
    client = ScriptedClient(creates=[QUEUED], reads=[errors.ResponseGone("HTTP 410")])
    flow = flow_for(client)
    job_id = _add(store)
    flow.poll(job_id, flow.submit(job_id).seq)
    job = store.require_job(job_id)
    assert job.status is JobStatus.FAILED and job.error_code == "response_gone"
    assert "read-once" in (job.error_message or "")


def test_provider_failure_and_truncation_are_kept(store, flow_for) -> None:
    client = ScriptedClient(
        creates=[QUEUED, QUEUED],
        reads=[
            done("", status="failed", error_code="500", error_message="upstream died"),
            done("partial", truncated=True),
        ],
    )
    flow = flow_for(client)
    failed, truncated = _add(store), _add(store)
    flow.poll(failed, flow.submit(failed).seq)
    flow.poll(truncated, flow.submit(truncated).seq)
    job = store.require_job(failed)
    assert (job.status, job.error_code, job.error_message) == (
        JobStatus.FAILED,
        "500",
        "upstream died",
    )
    result = store.get_result(truncated)
    assert result is not None and result.status is JobStatus.INCOMPLETE
    assert result.output_text == "partial"
    assert result.incomplete_reason == "max_output_tokens"


def test_structured_output_is_parsed_or_fails_as_invalid_output(store, flow_for) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    client = ScriptedClient(creates=[QUEUED, QUEUED], reads=[done('{"n": 3}'), done('{"n": "x"}')])
    flow = flow_for(client, invalid_output_retries=0)  # the retry: test_invalid_output.py
    good, bad = _add(store, schema=schema), _add(store, schema=schema)
    flow.poll(good, flow.submit(good).seq)
    flow.poll(bad, flow.submit(bad).seq)
    assert store.get_result(good).parsed == {"n": 3}
    job = store.require_job(bad)
    assert job.status is JobStatus.FAILED and job.error_code == "invalid_output"


def test_cancel_without_provider_cancel_still_stops_the_job(store, flow_for) -> None:
    client = ScriptedClient(creates=[QUEUED])
    flow = flow_for(client)
    job_id = _add(store)
    flow.submit(job_id)
    assert flow.cancel(job_id).kind == "done"
    job = store.require_job(job_id)
    assert job.status is JobStatus.CANCELLED
    assert "could not cancel" in (job.error_message or "")
    assert flow.cancel(job_id).kind == "stop"


def test_long_waits_are_parked(store, flow_for) -> None:
    client = ScriptedClient(creates=[QUEUED])
    flow = flow_for(client)
    flow.settings.poll = PollPolicy(first_delay=100, jitter=0)
    job_id = _add(store)
    step = flow.submit(job_id)
    assert step.kind == "poll" and step.parked


def test_parse_structured() -> None:
    schema = {"type": "object", "required": ["a"]}
    assert parse_structured('{"a": 1}', schema) == ({"a": 1}, None)
    assert parse_structured("nope", schema)[1].startswith("output is not JSON")
    assert "schema" in parse_structured("{}", schema)[1]
