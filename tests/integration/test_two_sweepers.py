"""Two sweepers on PostgreSQL take each due row once: the second skips the rows the
first holds (``FOR UPDATE SKIP LOCKED``) while the first's claim is between its read and
its write. The same setups as the SQLite test in ``tests/unit/test_two_sweepers.py``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from flexpipe.store import Store
from tests.unit import test_two_sweepers as setups

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "setup",
    [
        setups._callbacks, setups._bulk_callbacks, setups._parked_polls, setups._lost_polls,
        setups._parked_submits, setups._stale_pending,
    ],
)
def test_a_row_is_claimed_by_one_sweeper(
    postgres_url: str, setup: Callable[[Store, list[datetime]], setups.Claim]
) -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    url = postgres_url.replace("postgresql://", "postgresql+psycopg://", 1)
    first, second = Store.from_url(url), Store.from_url(url)
    for store in (first, second):
        store._clock = lambda: now[0]
    first.create_tables()
    claim = setup(first, now)
    taken_by_second: list[Any] = []
    asked = []

    @sa.event.listens_for(first.engine, "after_cursor_execute")
    def _interleave(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and not asked:
            asked.append(True)
            taken_by_second.extend(claim(second))

    taken_by_first = claim(first)
    assert asked and taken_by_first
    assert taken_by_second == []  # every due row was locked by the first claim
    assert claim(first) == [] and claim(second) == []
    first.dispose()
    second.dispose()
