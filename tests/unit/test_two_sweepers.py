"""Two sweepers that read the same due rows take each row once.

The race is made deterministic: sweeper A's claim reads its rows, and before it writes,
sweeper B (another engine on the same SQLite file) runs the same claim from start to end.
Without a guarded update both would send every row (issue 15 §3: two beats); with it, B
takes them and A gets back nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from flexpipe.states import JobStatus
from flexpipe.store import Outcome, Store
from tests.unit.test_store import _job

Claim = Callable[[Store], list[Any]]


def _callbacks(store: Store, now: list[datetime]) -> Claim:
    for _ in range(3):
        job_id, _ = store.add_job(_job(callback={"task": "cb"}))
        store.finish(job_id, Outcome(status=JobStatus.COMPLETED))
    now[0] += timedelta(seconds=60)
    return lambda s: s.take_due_callbacks(overdue_after=5, limit=10)


def _unreceived_callbacks(store: Store, now: list[datetime]) -> Claim:
    for _ in range(3):
        job_id, _ = store.add_job(_job(callback={"task": "cb"}))
        store.finish(job_id, Outcome(status=JobStatus.COMPLETED))
        store.callback_sent(job_id)
    now[0] += timedelta(seconds=60)
    return lambda s: s.take_unreceived_callbacks(timeout=5, accept=lambda _: True, limit=10)


def _unreceived_bulk_callbacks(store: Store, now: list[datetime]) -> Claim:
    for _ in range(2):
        bulk_id, _ = store.add_bulk([], name=None, on_complete={"task": "done"})
        store.on_complete_sent(bulk_id)
    now[0] += timedelta(seconds=60)
    return lambda s: s.take_unreceived_bulk_callbacks(
        timeout=5, accept=lambda _: True, limit=10
    )


def _bulk_callbacks(store: Store, now: list[datetime]) -> Claim:
    for _ in range(2):
        store.add_bulk([], name=None, on_complete={"task": "done"})
    now[0] += timedelta(seconds=60)
    return lambda s: s.take_due_bulk_callbacks(overdue_after=5, limit=10)


def _parked_polls(store: Store, now: list[datetime]) -> Claim:
    for i in range(3):
        job_id, _ = store.add_job(_job())
        store.record_submitted(
            job_id, attempt=1, response_id=f"resp_{i}", status=JobStatus.SUBMITTED,
            tier="flex", next_poll_in=2, parked=True,
        )
    return lambda s: s.take_due_polls(overdue_after=60, horizon=5, limit=10)


def _lost_polls(store: Store, now: list[datetime]) -> Claim:
    for i in range(3):
        job_id, _ = store.add_job(_job())
        store.record_submitted(
            job_id, attempt=1, response_id=f"resp_{i}", status=JobStatus.SUBMITTED,
            tier="flex", next_poll_in=1, parked=False,
        )
    now[0] += timedelta(seconds=120)
    return lambda s: s.take_due_polls(overdue_after=60, limit=10)


def _parked_submits(store: Store, now: list[datetime]) -> Claim:
    for _ in range(3):
        job_id, _ = store.add_job(_job())
        store.defer_submit(job_id, 1)
    return lambda s: s.take_due_submits(horizon=5, limit=10)


def _stale_pending(store: Store, now: list[datetime]) -> Claim:
    for _ in range(3):
        store.add_job(_job())
    now[0] += timedelta(seconds=300)
    return lambda s: s.take_stale_pending(stale_after=120, limit=10)


@pytest.mark.parametrize(
    "setup",
    [
        _callbacks, _bulk_callbacks, _parked_polls, _lost_polls, _parked_submits,
        _stale_pending, _unreceived_callbacks, _unreceived_bulk_callbacks,
    ],
)
def test_a_row_is_claimed_by_one_sweeper(
    tmp_path: Path, setup: Callable[[Store, list[datetime]], Claim]
) -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    url = f"sqlite:///{tmp_path / 'sweep.db'}"
    first, second = Store.from_url(url), Store.from_url(url)
    for store in (first, second):
        store._clock = lambda: now[0]
    first.create_tables()
    claim = setup(first, now)
    taken_by_second: list[Any] = []

    @sa.event.listens_for(first.engine, "after_cursor_execute")
    def _interleave(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and not taken_by_second:
            taken_by_second.extend(claim(second) or [None])

    taken_by_first = claim(first)
    assert taken_by_second and taken_by_second != [None], "the second sweeper took nothing"
    ids_second = {row[0] for row in taken_by_second}
    ids_first = {row[0] for row in taken_by_first}
    assert ids_first.isdisjoint(ids_second), (ids_first, ids_second)
    assert claim(first) == [] and claim(second) == []
    first.dispose()
    second.dispose()
