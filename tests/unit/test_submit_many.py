"""submit_many reads first polls that came due while its chunk was being submitted, and
sends the others as countdown messages with the time that remains."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from flexpipe.flow import Flow, FlowSettings
from flexpipe.models import build_request
from flexpipe.policy import PollPolicy, RetryPolicy
from flexpipe.states import JobStatus
from flexpipe.store import NewJob, Store
from flexpipe.tasks import steps
from tests.unit.test_flow import QUEUED, ScriptedClient, done


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple, dict]]:
    messages: list[tuple[str, tuple, dict]] = []
    for task in (steps.submit, steps.poll, steps.poll_many):
        monkeypatch.setattr(
            task,
            "apply_async",
            lambda args, name=task.name, **kw: messages.append((name, tuple(args), kw)),
        )
    return messages


def _chunk(store: Store, monkeypatch: pytest.MonkeyPatch, first_delay: float, n: int = 3):
    client = ScriptedClient(creates=[QUEUED] * n, reads=[done(f"r{i}") for i in range(n)])
    flow = Flow(
        store,
        client,  # type: ignore[arg-type]
        FlowSettings(
            poll=PollPolicy(first_delay=first_delay, jitter=0),
            retry=RetryPolicy(jitter=0),
            park_after=30,
            learn_latency=False,
        ),
    )
    monkeypatch.setattr(steps, "runtime", lambda: SimpleNamespace(flow=flow, store=store))
    ids = [store.add_job(NewJob(request=build_request(f"t{i}", model="m")))[0] for i in range(n)]
    return ids, client


def test_first_polls_already_due_are_read_in_the_same_task(
    store: Store, sent: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids, client = _chunk(store, monkeypatch, first_delay=1e-6)
    assert steps.submit_many(ids) == "3 submitted, 3 read at once"
    assert client.calls == ["create"] * 3 + ["retrieve"] * 3
    assert sent == []  # no poll message at all
    for job_id in ids:
        job = store.require_job(job_id)
        assert job.status is JobStatus.COMPLETED and job.poll_count == 1


def test_first_polls_not_yet_due_go_out_with_the_countdown_that_remains(
    store: Store, sent: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids, client = _chunk(store, monkeypatch, first_delay=10)
    assert steps.submit_many(ids) == "3 submitted, 0 read at once"
    assert client.calls == ["create"] * 3
    assert [(name, args[0]) for name, args, _ in sent] == [("flexpipe.poll", i) for i in ids]
    for _, args, options in sent:
        assert args[1] == 1  # the chain's fencing number
        assert 9 < options["countdown"] <= 10
