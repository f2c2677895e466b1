"""The SQL store on SQLite: guarded updates make every step safe to run twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flexpipe.models import build_request
from flexpipe.states import JobStatus
from flexpipe.store import NewJob, Outcome, Store


def _job(key: str | None = None, **kw) -> NewJob:
    return NewJob(request=build_request("hello", model="m"), idempotency_key=key, **kw)


def test_add_and_read(store: Store) -> None:
    job_id, created = store.add_job(_job())
    assert created
    job = store.require_job(job_id)
    assert job.status is JobStatus.PENDING
    assert job.request.input == "hello"
    assert job.created_at.tzinfo is not None


def test_idempotency_key_returns_the_first_job(store: Store) -> None:
    first, created = store.add_job(_job("k1"))
    again, created_again = store.add_job(_job("k1"))
    assert created and not created_again
    assert again == first
    pairs = store.add_jobs([_job("k2"), _job("k2"), _job("k1")])
    assert [c for _, c in pairs] == [True, False, False]
    assert pairs[0][0] == pairs[1][0]
    assert pairs[2][0] == first
    assert sum(store.status_counts().values()) == 2


def test_submit_lease_is_taken_once(store: Store) -> None:
    job_id, _ = store.add_job(_job())
    assert store.claim_submit(job_id, lease_s=60) is not None
    assert store.claim_submit(job_id, lease_s=60) is None
    store.release_submit(job_id)
    assert store.claim_submit(job_id, lease_s=60) is not None


def test_record_submitted_only_from_pending(store: Store) -> None:
    job_id, _ = store.add_job(_job())
    seq = store.record_submitted(
        job_id,
        attempt=1,
        response_id="resp_1",
        status=JobStatus.SUBMITTED,
        tier="flex",
        next_poll_in=5,
        parked=False,
    )
    assert seq == 1
    again = store.record_submitted(
        job_id,
        attempt=1,
        response_id="resp_2",
        status=JobStatus.SUBMITTED,
        tier="flex",
        next_poll_in=5,
        parked=False,
    )
    assert again is None
    assert store.require_job(job_id).response_id == "resp_1"


def test_poll_chain_fencing(store: Store) -> None:
    job_id, _ = store.add_job(_job())
    seq = store.record_submitted(
        job_id,
        attempt=1,
        response_id="r",
        status=JobStatus.SUBMITTED,
        tier="flex",
        next_poll_in=1,
        parked=False,
    )
    assert seq is not None
    nxt = store.schedule_poll(job_id, seq, status=JobStatus.IN_PROGRESS, delay=1, parked=False)
    assert nxt == seq + 1
    # The old chain's message arrives late: it is fenced out.
    assert (
        store.schedule_poll(job_id, seq, status=JobStatus.IN_PROGRESS, delay=1, parked=False)
        is None
    )
    job = store.require_job(job_id)
    assert job.poll_count == 1
    assert job.status is JobStatus.IN_PROGRESS
    assert job.started_at is not None


def test_finish_is_idempotent(store: Store) -> None:
    job_id, _ = store.add_job(_job(callback={"task": "cb"}))
    outcome = Outcome(status=JobStatus.COMPLETED, response_id="r", output_text="done")
    assert store.finish(job_id, outcome)
    assert store.finish(job_id, Outcome(status=JobStatus.FAILED, error_code="x")) is None
    job = store.require_job(job_id)
    result = store.get_result(job_id)
    assert job.status is JobStatus.COMPLETED
    assert result is not None and result.output_text == "done"
    assert job.error_code is None


def test_due_polls_parked_and_lost(tmp_path) -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    store = Store.from_url(f"sqlite:///{tmp_path / 'clock.db'}")
    store._clock = lambda: now[0]
    store.create_tables()
    ids = [store.add_job(_job())[0] for _ in range(3)]
    parked = store.record_submitted(
        ids[0],
        attempt=1,
        response_id="a",
        status=JobStatus.SUBMITTED,
        tier="flex",
        next_poll_in=100,
        parked=True,
    )
    store.record_submitted(
        ids[1],
        attempt=1,
        response_id="b",
        status=JobStatus.SUBMITTED,
        tier="flex",
        next_poll_in=5,
        parked=False,
    )
    assert store.take_due_polls(overdue_after=60, horizon=10, limit=10) == []
    now[0] += timedelta(seconds=95)
    taken = {
        job_id: (seq, delay)
        for job_id, seq, delay in store.take_due_polls(overdue_after=60, horizon=10, limit=10)
    }
    # Parked and due within the horizon (in 5 s); and a chain 90 s late (now). The fencing
    # number stays: a late message of that chain may still run, and one of the two stops.
    assert taken == {ids[0]: (parked, 5.0), ids[1]: (1, 0.0)}
    assert store.take_due_polls(overdue_after=60, horizon=10, limit=10) == []  # not twice
    store.dispose()


def test_stale_pending_and_deadlines(tmp_path) -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    store = Store.from_url(f"sqlite:///{tmp_path / 'clock.db'}")
    store._clock = lambda: now[0]
    store.create_tables()
    job_id, _ = store.add_job(_job(deadline_at=now[0] + timedelta(seconds=30)))
    assert store.take_stale_pending(stale_after=10, limit=5) == []
    now[0] += timedelta(seconds=11)
    assert store.take_stale_pending(stale_after=10, limit=5) == [job_id]
    assert store.take_stale_pending(stale_after=10, limit=5) == []
    assert store.past_deadline(limit=5) == []
    now[0] += timedelta(seconds=20)
    assert [j.id for j in store.past_deadline(limit=5)] == [job_id]
    store.dispose()


def test_due_callbacks(tmp_path) -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    store = Store.from_url(f"sqlite:///{tmp_path / 'clock.db'}")
    store._clock = lambda: now[0]
    store.create_tables()
    job_id, _ = store.add_job(_job(callback={"task": "cb", "args": []}))
    store.finish(job_id, Outcome(status=JobStatus.COMPLETED))
    assert store.take_due_callbacks(overdue_after=5, limit=5) == []
    now[0] += timedelta(seconds=6)
    assert store.take_due_callbacks(overdue_after=5, limit=5) == [
        (job_id, {"task": "cb", "args": []}, 1)
    ]
    store.callback_sent(job_id)
    now[0] += timedelta(seconds=60)
    assert store.take_due_callbacks(overdue_after=5, limit=5) == []
    store.dispose()


def test_bulk_finishes_exactly_once_whatever_the_order(store: Store) -> None:
    import random

    items = [_job() for _ in range(7)] + [_job("dup"), _job("dup")]
    bulk_id, pairs = store.add_bulk(items, name="nightly", on_complete={"task": "done"})
    ids = [job_id for job_id, created in pairs if created]
    assert len(ids) == 8  # the repeated key is one job
    statuses = [JobStatus.COMPLETED] * 5 + [
        JobStatus.FAILED,
        JobStatus.INCOMPLETE,
        JobStatus.EXPIRED,
    ]
    order = list(zip(ids, statuses, strict=True))
    random.Random(5).shuffle(order)
    finished = [store.finish(job_id, Outcome(status=status)) for job_id, status in order]
    assert [f.bulk_finished for f in finished if f] == [False] * 7 + [True]
    assert finished[-1] is not None and finished[-1].bulk_on_complete == {"task": "done"}
    bulk = store.get_bulk(bulk_id)
    assert bulk is not None and bulk.finished
    assert (
        bulk.total,
        bulk.done,
        bulk.completed,
        bulk.failed,
        bulk.incomplete,
        bulk.expired,
        bulk.pending,
        bulk.in_flight,
    ) == (8, 8, 5, 1, 1, 1, 0, 0)
    assert sorted(store.bulk_job_ids(bulk_id)) == sorted(ids)
    # A second finish of any job changes nothing.
    assert store.finish(ids[0], Outcome(status=JobStatus.COMPLETED)) is None
    assert store.get_bulk(bulk_id).done == 8


def test_empty_bulk_is_finished_at_once(store: Store) -> None:
    bulk_id, pairs = store.add_bulk([], name=None, on_complete=None)
    assert pairs == []
    bulk = store.get_bulk(bulk_id)
    assert bulk is not None and bulk.finished and bulk.total == 0


def test_no_callback_and_no_on_complete_are_never_due(tmp_path) -> None:
    """A job without a callback and a bulk without ``on_complete`` leave nothing for the
    sweeper to send: None is stored as JSON ``null``, which must not count as a callback."""
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    store = Store.from_url(f"sqlite:///{tmp_path / 'clock.db'}")
    store._clock = lambda: now[0]
    store.create_tables()
    job_id, _ = store.add_job(_job())
    _bulk_id, pairs = store.add_bulk([_job(), _job()], name=None, on_complete=None)
    for one in [job_id] + [j for j, _ in pairs]:
        assert store.finish(one, Outcome(status=JobStatus.COMPLETED)) is not None
    now[0] += timedelta(seconds=600)
    assert store.take_due_callbacks(overdue_after=5, limit=5) == []
    assert store.take_due_bulk_callbacks(overdue_after=5, limit=5) == []
    store.dispose()


def test_latency_samples_by_submit_time_with_waiting_jobs(tmp_path) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    now = [t0]
    store = Store.from_url(f"sqlite:///{tmp_path / 'clock.db'}")
    store._clock = lambda: now[0]
    store.create_tables()

    def submitted(at_s: float) -> str:
        now[0] = t0 + timedelta(seconds=at_s)
        job_id, _ = store.add_job(_job())
        store.claim_submit(job_id, lease_s=60)
        store.record_submitted(job_id, attempt=1, response_id=f"r{at_s}",
                               status=JobStatus.SUBMITTED, tier="flex", next_poll_in=5,
                               parked=False)
        return job_id

    early, late, _running, expired = submitted(0), submitted(10), submitted(20), submitted(30)
    now[0] = t0 + timedelta(seconds=50)
    # Whole-second completion times (as providers report them) count as mid-second.
    store.finish(early, Outcome(status=JobStatus.COMPLETED,
                                provider_completed_at=t0 + timedelta(seconds=40)))
    store.finish(late, Outcome(status=JobStatus.COMPLETED,
                               provider_completed_at=t0 + timedelta(seconds=15.25)))
    store.finish(expired, Outcome(status=JobStatus.EXPIRED))
    now[0] = t0 + timedelta(seconds=60)

    finished, waiting = store.latency_samples("m", "flex")
    assert sorted(finished) == [5.25, 40.5]
    assert sorted(waiting) == [20.0, 40.0]  # expired after 20 s; running for 40 s so far
    finished, waiting = store.latency_samples(
        "m", "flex", submitted_before=t0 + timedelta(seconds=15)
    )
    assert (sorted(finished), waiting) == ([5.25, 40.5], [])
    assert store.latency_samples("other", "flex") == ([], [])
    store.dispose()


def test_ids_people_can_type(store: Store) -> None:
    """Any unique prefix of 8 or more characters stands for a job id, as in git."""
    import pytest

    from flexpipe.errors import AmbiguousId

    ids = ["abcdef12" + "0" * 24, "abcdef12" + "1" * 24, "1234567890" + "a" * 22]
    for job_id in ids:
        store.add_job(NewJob(request=build_request("hi", model="m"), id=job_id))
    assert store.resolve_job_id("12345678") == ids[2]
    assert store.resolve_job_id("ABCDEF121") == ids[1]
    assert store.resolve_job_id(ids[0]) == ids[0]
    assert store.resolve_job_id("1234567") == "1234567"  # too short to be a prefix
    assert store.resolve_job_id("99999999") == "99999999"  # no match: the caller's not found
    with pytest.raises(AmbiguousId, match="'abcdef12' is ambiguous: 2 jobs start with it"):
        store.resolve_job_id("abcdef12")
    assert store.short_ids(ids) == {ids[0]: "abcdef120", ids[1]: "abcdef121", ids[2]: "12345678"}
