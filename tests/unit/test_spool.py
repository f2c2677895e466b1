"""A response id the provider gave is never forgotten: when its commit fails, the next
submit (the task's retry, the sweeper's re-send, a new process) polls it instead of
creating the job again."""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from flexpipe import errors
from flexpipe.flow import Flow, FlowSettings
from flexpipe.policy import PollPolicy, RetryPolicy
from flexpipe.spool import SPOOL_NAME, Spool
from flexpipe.states import JobStatus
from flexpipe.store import Store
from tests.unit.test_flow import QUEUED, RUNNING, ScriptedClient, _add, done


class RefusingStore(Store):
    """Refuses ``record_submitted`` while ``refusing`` (a database that stays away)."""

    refusing = True

    def record_submitted(self, *args, **kwargs):  # type: ignore[override]
        if self.refusing:
            raise errors.DatabaseUnavailable("read-only", sqlstate="25006")
        return super().record_submitted(*args, **kwargs)


def _flow(store: Store, client: ScriptedClient, spool: Spool) -> Flow:
    settings = FlowSettings(
        poll=PollPolicy(first_delay=1, jitter=0), retry=RetryPolicy(jitter=0),
        learn_latency=False, submit_lease=30,
    )
    return Flow(store, client, settings, spool=spool)  # type: ignore[arg-type]


@pytest.fixture
def refusing(tmp_path: Path):
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    store = RefusingStore.from_url(f"sqlite:///{tmp_path / 'spool.db'}")
    store._clock = lambda: now[0]
    store.create_tables()
    yield store, now
    store.dispose()


def test_the_retried_task_records_the_kept_id(refusing, tmp_path: Path) -> None:
    store, _ = refusing
    client = ScriptedClient(creates=[QUEUED], reads=[done("kept")])
    flow = _flow(store, client, Spool.in_dir(tmp_path))
    job_id = _add(store)
    with pytest.raises(errors.DatabaseUnavailable):
        flow.submit(job_id)  # created at the provider; the commit was refused
    assert store.require_job(job_id).status is JobStatus.PENDING
    store.refusing = False
    # The task's autoretry runs submit again while the lease is still held.
    step = flow.submit(job_id)
    assert step.kind == "poll" and step.delay == 0
    assert store.require_job(job_id).response_id == "resp_1"
    assert flow.poll(job_id, step.seq).kind == "done"
    assert client.calls == ["create", "retrieve"]
    assert store.attempts(job_id)[0]["response_id"] == "resp_1"
    assert Spool.in_dir(tmp_path).pending() == []


def test_a_new_process_after_the_lease_polls_instead_of_creating(
    refusing, tmp_path: Path
) -> None:
    store, now = refusing
    first = ScriptedClient(creates=[RUNNING])
    job_id = _add(store)
    with pytest.raises(errors.DatabaseUnavailable):
        _flow(store, first, Spool.in_dir(tmp_path)).submit(job_id)
    store.refusing = False
    now[0] += timedelta(seconds=31)  # the lease is over: the sweeper re-sends the submit
    second = ScriptedClient(creates=[QUEUED], reads=[done()])
    flow = _flow(store, second, Spool.in_dir(tmp_path))  # a fresh process's objects
    step = flow.submit(job_id)
    assert step.kind == "poll"
    assert second.calls == []
    assert flow.poll(job_id, step.seq).kind == "done"
    assert second.calls == ["retrieve"]


def test_worker_start_recovers_every_kept_id(refusing, tmp_path: Path) -> None:
    store, _ = refusing
    ids = [_add(store) for _ in range(3)]
    client = ScriptedClient(creates=[QUEUED, QUEUED, QUEUED])
    flow = _flow(store, client, Spool.in_dir(tmp_path))
    for job_id in ids:
        with pytest.raises(errors.DatabaseUnavailable):
            flow.submit(job_id)
    store.refusing = False
    steps = flow.recover_spooled()
    assert [job_id for job_id, _ in steps] == ids
    assert all(step.kind == "poll" for _, step in steps)
    assert {store.require_job(j).status for j in ids} == {JobStatus.SUBMITTED}
    assert flow.recover_spooled() == []


def test_recorded_entries_are_compacted_away(tmp_path: Path) -> None:
    spool = Spool(tmp_path / SPOOL_NAME, compact_bytes=2000)
    for i in range(200):
        spool.add(f"job{i}", 1, f"resp_{i}")
        if i != 7:
            spool.recorded(f"job{i}", 1)
    assert spool.pending() == [("job7", 1, "resp_7")]
    assert (tmp_path / SPOOL_NAME).stat().st_size < 2000
    assert spool.find("job7", 1) == "resp_7"
    assert spool.find("job7", 2) is None and spool.find("job8", 1) is None


def test_a_torn_last_line_is_ignored(tmp_path: Path) -> None:
    spool = Spool(tmp_path / SPOOL_NAME)
    spool.add("a", 1, "resp_a")
    with open(tmp_path / SPOOL_NAME, "a") as f:
        f.write('{"job":"b","attem')
    assert spool.pending() == [("a", 1, "resp_a")]


def _append_many(path: str, worker: int) -> None:
    spool = Spool(Path(path), compact_bytes=4000)
    for i in range(100):
        spool.add(f"w{worker}-{i}", 1, f"r{worker}-{i}")
        if i % 10:
            spool.recorded(f"w{worker}-{i}", 1)


def test_processes_share_the_file_without_losing_entries(tmp_path: Path) -> None:
    path = tmp_path / SPOOL_NAME
    procs = [
        multiprocessing.get_context("fork").Process(target=_append_many, args=(str(path), w))
        for w in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    expected = {(f"w{w}-{i}", 1, f"r{w}-{i}") for w in range(4) for i in range(0, 100, 10)}
    assert set(Spool(path).pending()) == expected
