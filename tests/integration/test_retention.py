"""Prune on the migrated schema, on SQLite and PostgreSQL: every row that something may still
need stays (callback due, bulk open or its callback due, in flight, pending, newer than the
cutoff), everything else goes with its results and attempts."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from flexpipe.migrations import upgrade
from flexpipe.models import build_request
from flexpipe.retention import parse_age, prune
from flexpipe.schema import attempts, bulks, jobs, results
from flexpipe.states import JobStatus
from flexpipe.store import NewJob, Outcome, Store
from tests.integration.stack import ROOT

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
OLD = NOW - timedelta(days=40)
RECENT = NOW - timedelta(days=1)
CALLBACK = {"task": "app.done", "args": [], "kwargs": {}, "options": {}}


class Clock:
    def __init__(self) -> None:
        self.at = OLD

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'retention.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(database_url: str, clock: Clock) -> Iterator[Store]:
    upgrade(database_url)  # the migrated schema, with its cascades and partial indexes
    from flexpipe.store import make_engine

    s = Store(make_engine(database_url), clock=clock)
    yield s
    s.dispose()


def _new(callback: dict[str, object] | None = None) -> NewJob:
    return NewJob(request=build_request("hello", model="m"), callback=callback)


def _submit(store: Store, job_id: str) -> None:
    assert store.claim_submit(job_id, lease_s=60) is not None
    seq = store.record_submitted(
        job_id,
        attempt=1,
        response_id=f"resp_{job_id}",
        status=JobStatus.IN_PROGRESS,
        tier="flex",
        next_poll_in=5,
        parked=False,
    )
    assert seq == 1


def _finish(store: Store, job_id: str, status: JobStatus = JobStatus.COMPLETED) -> None:
    _submit(store, job_id)
    outcome = Outcome(status=status, response_id=f"resp_{job_id}", output_text="done")
    assert store.finish(job_id, outcome) is not None


def _job(store: Store, *, finished: bool = True, callback: bool = False) -> str:
    job_id, _ = store.add_job(_new(CALLBACK if callback else None))
    if finished:
        _finish(store, job_id)
    return job_id


def _bulk(store: Store, n: int, *, on_complete: bool) -> tuple[str, list[str]]:
    bulk_id, pairs = store.add_bulk(
        [_new() for _ in range(n)], name="b", on_complete=CALLBACK if on_complete else None
    )
    return bulk_id, [job_id for job_id, _ in pairs]


def _ids(store: Store, table: sa.Table, column: str) -> set[str]:
    with store.engine.connect() as conn:
        return set(conn.execute(sa.select(table.c[column])).scalars())


def test_prune_keeps_what_may_still_be_needed_and_removes_the_rest(
    store: Store, clock: Clock
) -> None:
    clock.at = OLD
    keep: dict[str, str] = {}
    gone: dict[str, str] = {}
    keep["callback due"] = _job(store, callback=True)
    keep["in flight"] = _job(store, finished=False)
    _submit(store, keep["in flight"])
    keep["pending"] = _job(store, finished=False)
    gone["finished"] = _job(store)
    gone["callback sent"] = _job(store, callback=True)
    store.callback_sent(gone["callback sent"])
    failed, _ = store.add_job(_new())
    _finish(store, failed, JobStatus.FAILED)
    gone["failed"] = failed

    open_bulk, (open_done, open_live) = _bulk(store, 2, on_complete=True)
    _finish(store, open_done)
    _submit(store, open_live)
    keep["open bulk, finished item"] = open_done
    keep["open bulk, live item"] = open_live

    due_bulk, due_items = _bulk(store, 2, on_complete=True)
    for job_id in due_items:
        _finish(store, job_id)  # the last one makes the bulk's callback due; never sent
    keep.update({f"bulk callback due {i}": j for i, j in enumerate(due_items)})

    sent_bulk, sent_items = _bulk(store, 3, on_complete=True)
    for job_id in sent_items:
        _finish(store, job_id)
    store.on_complete_sent(sent_bulk)
    gone.update({f"bulk callback sent {i}": j for i, j in enumerate(sent_items)})

    _, plain_items = _bulk(store, 2, on_complete=False)
    for job_id in plain_items:
        _finish(store, job_id)
    gone.update({f"plain bulk {i}": j for i, j in enumerate(plain_items)})

    late_bulk, (early_item, late_item) = _bulk(store, 2, on_complete=False)
    _finish(store, early_item)  # 40 days ago
    clock.at = RECENT
    _finish(store, late_item)  # the bulk finished yesterday: both items stay
    keep["recent bulk, old item"] = early_item
    keep["recent bulk, new item"] = late_item
    keep["recent"] = _job(store)

    clock.at = NOW
    pruned = prune(store, parse_age("30d"), batch=2, now=NOW)

    assert pruned.jobs == len(gone)
    assert pruned.bulks == 2
    remaining = _ids(store, jobs, "id")
    assert remaining == set(keep.values()), {
        name: job_id in remaining for name, job_id in {**keep, **gone}.items()
    }
    assert _ids(store, bulks, "id") == {open_bulk, due_bulk, late_bulk}
    assert _ids(store, results, "job_id") == set(keep.values()) - {
        keep["in flight"],
        keep["pending"],
        keep["open bulk, live item"],
    }
    assert _ids(store, attempts, "job_id") == set(keep.values()) - {keep["pending"]}
    # What stayed reads as before.
    result = store.get_result(keep["callback due"])
    assert result is not None and result.output_text == "done"
    bulk = store.get_bulk(open_bulk)
    assert bulk is not None and bulk.done == 1 and bulk.in_flight == 1

    # A second prune finds nothing; one with a shorter age takes the recent history.
    assert prune(store, parse_age("30d"), now=NOW).jobs == 0
    store.callback_sent(keep["callback due"])
    store.on_complete_sent(due_bulk)
    again = prune(store, parse_age("12h"), now=NOW)
    assert again.jobs == len(keep) - 4  # in flight, pending and the open bulk's two stay
    assert _ids(store, bulks, "id") == {open_bulk}


def test_deleting_a_job_cascades_to_its_results_and_attempts(store: Store) -> None:
    job_id = _job(store)
    with store.engine.begin() as conn:
        conn.execute(jobs.delete().where(jobs.c.id == job_id))
    assert _ids(store, results, "job_id") == set()
    assert _ids(store, attempts, "job_id") == set()


def test_parse_age() -> None:
    assert parse_age("30d") == timedelta(days=30)
    assert parse_age(" 12h ") == timedelta(hours=12)
    assert parse_age("2w") == timedelta(weeks=2)
    with pytest.raises(ValueError, match="not an age"):
        parse_age("30 days")


def test_cli_prune(database_url: str, store: Store, clock: Clock, tmp_path: Path) -> None:
    clock.at = datetime.now(UTC) - timedelta(days=40)
    old = _job(store)
    clock.at = datetime.now(UTC)
    new = _job(store)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FLEXPIPE_")},
        "FLEXPIPE_DATABASE_URL": database_url,
        "FLEXPIPE_DATA_DIR": str(tmp_path / "data"),
        "PYTHONPATH": str(ROOT),
    }
    argv = [sys.executable, "-m", "flexpipe.cli", "db", "prune", "--older-than", "30d"]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "pruned 1 job(s) and 0 bulk(s)" in done.stdout
    assert _ids(store, jobs, "id") == {new}
    assert old not in _ids(store, results, "job_id")
    bad = subprocess.run(
        [*argv[:-1], "thirty"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 2 and "--older-than" in bad.stderr
