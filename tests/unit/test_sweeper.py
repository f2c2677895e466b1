"""The sweeper's deadline pass: every step it gets from the flow is followed."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest

from flexpipe.config.settings import Settings
from flexpipe.flow import Flow, FlowSettings
from flexpipe.models import build_request
from flexpipe.policy import PollPolicy, RetryPolicy
from flexpipe.states import JobStatus
from flexpipe.store import NewJob, Store
from flexpipe.tasks import steps, sweeper
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


def test_a_callback_sent_again_by_the_sweeper_is_the_same_message(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sender dies between publishing a callback and recording it: the sweeper sends
    it again with the same task id, and a later attempt's callback gets another."""
    from celery.canvas import Signature

    from flexpipe.flow import Next, callback_id
    from flexpipe.store import Outcome

    published: list[tuple[str, tuple, str]] = []
    monkeypatch.setattr(
        Signature, "apply_async",
        lambda self, args=(), task_id=None, **_: published.append((self.task, args, task_id)),
    )
    rt = _runtime(store)
    monkeypatch.setattr(sweeper, "runtime", lambda: rt)
    monkeypatch.setattr(steps, "runtime", lambda: rt)
    callback = {"task": "myapp.summary_ready", "args": [], "kwargs": {}, "options": {}}
    job_id, _ = store.add_job(NewJob(request=build_request("hello", model="m"), callback=callback))
    store.finish(job_id, Outcome(status=JobStatus.COMPLETED))

    def lost(_job_id: str) -> None:
        raise ConnectionError("worker lost before the send was recorded")

    with monkeypatch.context() as patch:
        patch.setattr(store, "callback_sent", lost)
        steps.follow(job_id, Next("done", callback=callback, attempt=1))
    assert sweeper.sweep()["callbacks"] == 0  # not overdue yet
    later = store.now() + timedelta(seconds=rt.settings.callback_overdue_after + 1)
    store._clock = lambda: later
    assert sweeper.sweep()["callbacks"] == 1
    assert sweeper.sweep()["callbacks"] == 0  # recorded this time

    first, again = published
    assert first == again == ("myapp.summary_ready", (job_id,), callback_id(job_id, 1))
    assert callback_id(job_id, 2) != callback_id(job_id, 1) != callback_id(job_id)
