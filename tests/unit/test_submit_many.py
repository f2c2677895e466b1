"""submit_many reads first polls that came due while its chunk was being submitted, and
sends the others as countdown messages with the time that remains."""

from __future__ import annotations

import threading
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


def _chunk(store: Store, monkeypatch: pytest.MonkeyPatch, first_delay: float, n: int = 3,
           client=None, limiter=None, concurrency: int = 4):
    if client is None:
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
        limiter=limiter,
    )
    settings = SimpleNamespace(submit_concurrency=concurrency)
    monkeypatch.setattr(
        steps, "runtime", lambda: SimpleNamespace(flow=flow, store=store, settings=settings)
    )
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


class BarrierClient(ScriptedClient):
    """Each create waits until ``parties`` creates are in progress at once: a chunk whose
    creates were sent one after the other would break the barrier (after its timeout)."""

    def __init__(self, parties: int) -> None:
        super().__init__(creates=[QUEUED] * parties)
        self.barrier = threading.Barrier(parties, timeout=30)

    def create(self, job_id, request, *, attempt=1):
        self.barrier.wait()
        return super().create(job_id, request, attempt=attempt)


def test_the_creates_of_a_chunk_are_sent_concurrently(
    store: Store, sent: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = BarrierClient(4)
    ids, _ = _chunk(store, monkeypatch, first_delay=10, n=4, client=client, concurrency=4)
    assert steps.submit_many(ids) == "4 submitted, 0 read at once"
    assert client.calls == ["create"] * 4
    assert not client.barrier.broken
    assert [args[0] for name, args, _ in sent if name == "flexpipe.poll"] == ids  # in order
    assert all(store.require_job(i).status is JobStatus.SUBMITTED for i in ids)


class TwoSlots:
    """A limiter with two submit slots in all."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.granted: list[str] = []

    def acquire(self, job_id: str, model: str) -> float:
        with self.lock:
            if len(self.granted) < 2:
                self.granted.append(job_id)
                return 0.0
            return 5.0

    def release(self, job_id: str) -> None:
        return None


def test_concurrent_creates_stay_within_the_shared_limits(
    store: Store, sent: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    limiter = TwoSlots()
    ids, client = _chunk(store, monkeypatch, first_delay=10, n=6, limiter=limiter)
    steps.submit_many(ids)
    assert client.calls == ["create"] * 2
    submitted = {i for i in ids if store.require_job(i).status is JobStatus.SUBMITTED}
    assert submitted == set(limiter.granted)
    parked = [store.require_job(i) for i in ids if i not in submitted]
    assert len(parked) == 4
    assert all(job.status is JobStatus.PENDING and job.next_poll_at for job in parked)


def test_a_chunk_is_claimed_in_one_statement_and_a_stale_claim_is_not_sent(
    store: Store, sent: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import timedelta

    ids, client = _chunk(store, monkeypatch, first_delay=10, n=3)
    flow = steps.runtime().flow
    assert store.claim_submit(ids[1], lease_s=60) is not None  # another submit holds it
    claimed = flow.claim_many(list(reversed(ids)))
    assert [job.id for job in claimed] == [ids[2], ids[0]]  # in the order asked, leased
    assert flow.claim_many(ids) == []
    old = store.now() - timedelta(seconds=flow.settings.submit_lease)
    step = flow.send(claimed[0], claimed_at=old)
    assert step.kind == "stop" and "lease" in step.reason
    assert client.calls == []  # no create on a lease that may run out mid-request
    assert store.require_job(ids[2]).status is JobStatus.PENDING
