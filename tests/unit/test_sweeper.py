"""The sweeper's deadline pass: every step it gets from the flow is followed."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest

from config.settings import Settings
from pipeline.flow import Flow, FlowSettings
from pipeline.models import build_request
from pipeline.policy import PollPolicy, RetryPolicy
from pipeline.states import JobStatus
from pipeline.store import NewJob, Store
from tasks import steps, sweeper
from tests.unit.test_flow import QUEUED, ScriptedClient


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple]]:
    """Messages the sweeper would send, recorded instead of published."""
    messages: list[tuple[str, tuple]] = []
    for task in (steps.submit, steps.poll, steps.poll_many):
        monkeypatch.setattr(
            task,
            "apply_async",
            lambda args, name=task.name, **_: messages.append((name, tuple(args))),
        )
    return messages


def _runtime(store: Store) -> SimpleNamespace:
    flow = Flow(
        store,
        ScriptedClient(creates=[QUEUED]),  # type: ignore[arg-type]
        FlowSettings(
            poll=PollPolicy(first_delay=1, jitter=0),
            retry=RetryPolicy(jitter=0),
            park_after=30,
            learn_latency=False,
        ),
    )
    return SimpleNamespace(settings=Settings(), store=store, flow=flow)


@pytest.mark.parametrize("escalate", [True, False])
def test_a_job_past_its_deadline_is_escalated_or_expired_by_the_sweeper(
    store: Store,
    sent: list[tuple[str, tuple]],
    monkeypatch: pytest.MonkeyPatch,
    escalate: bool,
) -> None:
    rt = _runtime(store)
    monkeypatch.setattr(sweeper, "runtime", lambda: rt)
    job_id, _ = store.add_job(
        NewJob(
            request=build_request("hello", model="m"),
            deadline_at=store.now() + timedelta(seconds=60),
            escalate=escalate,
        )
    )
    assert rt.flow.submit(job_id).kind == "poll"  # at the provider, on flex
    clock = store.now() + timedelta(seconds=61)
    store._clock = lambda: clock

    counts = sweeper.sweep()

    job = store.require_job(job_id)
    submits = [message for message in sent if message[0] == "flexpipe.submit"]
    if escalate:
        # The sweeper won the restart: the new attempt's submit must go out from here.
        assert counts["escalated"] == 1 and counts["expired"] == 0
        assert job.status is JobStatus.PENDING and job.request.service_tier == "priority"
        assert submits == [("flexpipe.submit", (job_id, 0))]
    else:
        assert counts["expired"] == 1 and counts["escalated"] == 0
        assert job.status is JobStatus.EXPIRED
        assert submits == []
