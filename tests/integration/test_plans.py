"""Query plans on PostgreSQL with history: each sweeper, list, retry, bulk and prune query of
the store reads the index meant for it (after ANALYZE, on thousands of finished jobs), and a
poll is a HOT update. Only the plans' shape is asserted, never a time."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from flexpipe.migrations import upgrade
from flexpipe.states import JobStatus
from flexpipe.store import Store, make_engine

pytestmark = pytest.mark.integration

FINISHED = 6000
IN_FLIGHT = 150
PENDING = 100
BULKS = 2000
TABLES = ("flexpipe_jobs", "flexpipe_results", "flexpipe_attempts", "flexpipe_bulks")
#: What a poll writes (Store.schedule_poll); no index may hold any of them.
POLL_COLUMNS = {"next_poll_at", "poll_seq", "poll_count", "parked", "updated_at", "started_at"}


@pytest.fixture(scope="module")
def history_url(postgres_server: str) -> Iterator[str]:
    """One database for the module: the migrated schema, filled by SQL, analysed."""
    import uuid

    name = f"flexpipe_plans_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = postgres_server.rsplit("/", 1)[0] + f"/{name}"
    try:
        upgrade(url)
        engine = sa.create_engine(url)
        counts = {"finished": FINISHED, "live": IN_FLIGHT, "pending": PENDING, "bulks": BULKS}
        with engine.begin() as conn:
            for statement in FILL.split(";\n"):
                if statement.strip():
                    conn.execute(sa.text(statement), counts)
            # No autovacuum here: its snapshot would hold back page pruning (HOT test).
            for table in TABLES:
                conn.execute(sa.text(f"ALTER TABLE {table} SET (autovacuum_enabled = false)"))
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM ANALYZE"))
        engine.dispose()
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# Rows in the shape Store writes them: finished jobs spread over 60 days (a tenth failed, a
# few with a callback still due, half in finished bulks), then live ones.
FILL = """
INSERT INTO flexpipe_bulks (id, name, total, done, completed, failed, incomplete, cancelled,
                            expired, created_at, finished_at)
SELECT 'b' || g, 'bulk', 2, 2, 2, 0, 0, 0, 0, now() - g * interval '30 min',
       now() - g * interval '30 min'
FROM generate_series(1, :bulks) g;

INSERT INTO flexpipe_jobs (id, status, bulk_id, model, requested_tier, mode, request,
    response_id, attempt, poll_count, poll_seq, parked, escalate, deadline_at, created_at,
    dispatched_at, submitted_at, started_at, finished_at, callback_due_at, updated_at)
SELECT md5('f' || g), CASE WHEN g % 10 = 0 THEN 'failed' ELSE 'completed' END,
       CASE WHEN g <= 2 * :bulks THEN 'b' || (g + 1) / 2 END, 'm', 'flex', 'background',
       '{"model": "m", "input": "hello"}', 'resp_' || g, 1, 3, 3, false, false,
       t + interval '75 min', t, t, t, t, t + interval '5 min',
       CASE WHEN g % 500 = 0 THEN t + interval '5 min' END, t + interval '5 min'
FROM (SELECT g, now() - (g * 60 * 24 * 60 / :finished) * interval '1 min' AS t
      FROM generate_series(1, :finished) g) s;

INSERT INTO flexpipe_results (job_id, status, response_id, output, input_tokens,
    cached_tokens, output_tokens, reasoning_tokens, total_tokens, served_tier, stored_at)
SELECT id, status, response_id,
       '[{"type": "message", "content": [{"type": "output_text", "text": "ok"}]}]',
       10, 0, 5, 0, 15, 'flex', finished_at
FROM flexpipe_jobs;

INSERT INTO flexpipe_jobs (id, status, model, requested_tier, mode, request, response_id,
    attempt, poll_count, poll_seq, next_poll_at, parked, escalate, deadline_at, created_at,
    dispatched_at, submitted_at, updated_at)
SELECT md5('l' || g), CASE WHEN g % 2 = 0 THEN 'in_progress' ELSE 'submitted' END, 'm',
       'flex', 'background', '{"model": "m", "input": "hello"}', 'resp_l' || g, 1, 1, 1,
       now() + interval '30 s', g % 3 = 0, false, now() + interval '1 hour', now(), now(),
       now(), now()
FROM generate_series(1, :live) g;

INSERT INTO flexpipe_jobs (id, status, model, requested_tier, mode, request, attempt,
    poll_count, poll_seq, parked, escalate, deadline_at, created_at, dispatched_at,
    updated_at, next_poll_at)
SELECT md5('p' || g), 'pending', 'm', 'flex', 'background',
       '{"model": "m", "input": "hello"}', 1, 0, 0, g % 2 = 0, false,
       now() + interval '1 hour', now(), now(), now(),
       CASE WHEN g % 2 = 0 THEN now() + interval '1 min' END
FROM generate_series(1, :pending) g;
"""


@pytest.fixture
def store(history_url: str) -> Iterator[Store]:
    s = Store(make_engine(history_url))
    yield s
    s.dispose()


def plans_of(store: Store, call: Callable[[], Any]) -> list[dict[str, Any]]:
    """The plans (EXPLAIN, JSON) of every SELECT ``call`` runs, on the same parameters."""
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    sa.event.listen(store.engine, "before_cursor_execute", record)
    try:
        call()
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", record)
    assert seen, "the call ran no SELECT"
    plans = []
    with store.engine.connect() as conn:
        for statement, parameters in seen:
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            cursor.execute("EXPLAIN (FORMAT JSON) " + statement, parameters)
            (row,) = cursor.fetchall()
            plan = row[0] if not isinstance(row[0], str) else json.loads(row[0])
            plans.append(plan[0]["Plan"])
        conn.rollback()
    return plans


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def assert_reads(plan: dict[str, Any], index: str, table: str = "flexpipe_jobs") -> None:
    found = list(nodes(plan))
    used = {n.get("Index Name") for n in found}
    scans = [n for n in found if n["Node Type"] == "Seq Scan" and n["Relation Name"] == table]
    assert index in used, json.dumps(plan, indent=1)
    assert not scans, json.dumps(plan, indent=1)


def test_sweeper_queries_read_their_partial_indexes(store: Store) -> None:
    (polls,) = plans_of(store, lambda: store.take_due_polls(overdue_after=60, horizon=5,
                                                              limit=2000))
    assert_reads(polls, "ix_flexpipe_jobs_in_flight")
    (submits,) = plans_of(store, lambda: store.take_due_submits(horizon=5, limit=2000))
    assert_reads(submits, "ix_flexpipe_jobs_pending_dispatched_at")
    (stale,) = plans_of(store, lambda: store.take_stale_pending(stale_after=120, limit=2000))
    assert_reads(stale, "ix_flexpipe_jobs_pending_dispatched_at")
    (deadline,) = plans_of(store, lambda: store.past_deadline(limit=2000))
    assert_reads(deadline, "ix_flexpipe_jobs_live_deadline_at")
    (callbacks,) = plans_of(store, lambda: store.take_due_callbacks(overdue_after=30,
                                                                    limit=2000))
    assert_reads(callbacks, "ix_flexpipe_jobs_callback_due_at")
    (bulk_callbacks,) = plans_of(
        store, lambda: store.take_due_bulk_callbacks(overdue_after=30, limit=2000)
    )
    assert_reads(bulk_callbacks, "ix_flexpipe_bulks_on_complete_due_at", "flexpipe_bulks")


def test_list_retry_bulk_and_prune_read_their_indexes(store: Store) -> None:
    (newest,) = plans_of(store, lambda: store.list_jobs(limit=50))
    assert_reads(newest, "ix_flexpipe_jobs_created_at")
    (failed,) = plans_of(store, lambda: store.list_jobs(status="failed", limit=50))
    assert_reads(failed, "ix_flexpipe_jobs_status_created_at")
    since = datetime.now(UTC) - timedelta(days=1)
    (retry,) = plans_of(store, lambda: store.failed_since([JobStatus.FAILED], since, 10_000))
    assert_reads(retry, "ix_flexpipe_jobs_status_finished_at")
    (bulk,) = plans_of(store, lambda: store.get_bulk("b7"))
    assert_reads(bulk, "ix_flexpipe_jobs_bulk_id")
    cutoff = datetime.now(UTC) - timedelta(days=30)
    prune_plans = plans_of(store, lambda: store.prune_jobs(cutoff, limit=1000))
    assert_reads(prune_plans[0], "ix_flexpipe_jobs_status_finished_at")


def test_polls_are_hot_updates(store: Store) -> None:
    """Every poll of an in-flight job writes no index: PostgreSQL updates it in place."""
    with store.engine.connect() as conn:
        indexed = set(conn.execute(sa.text(
            "SELECT DISTINCT a.attname FROM pg_index i JOIN pg_attribute a"
            " ON a.attrelid = i.indrelid AND (a.attnum = ANY(i.indkey) OR"
            " pg_get_expr(i.indpred, i.indrelid) ~ ('\\m' || a.attname || '\\M'))"
            " WHERE i.indrelid = 'flexpipe_jobs'::regclass AND a.attnum > 0"
        )).scalars())
    assert "status" in indexed and "deadline_at" in indexed
    assert not indexed & POLL_COLUMNS
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM flexpipe_jobs"))  # the earlier tests' claims wrote rows
    with store.engine.connect() as conn:
        live = conn.execute(sa.text(
            "SELECT id, poll_seq FROM flexpipe_jobs WHERE status = 'in_progress' LIMIT 40"
        )).all()
    before = _update_counts(store)
    polls = 0
    for _ in range(3):
        for i, (job_id, seq) in enumerate(live):
            new = store.schedule_poll(job_id, seq + polls // len(live),
                                      status=JobStatus.IN_PROGRESS, delay=5 + i,
                                      parked=i % 2 == 0)
            assert new is not None
            polls += 1
    store.engine.dispose()  # a closing backend flushes its statistics
    deadline = time.monotonic() + 30
    while (after := _update_counts(store))[0] - before[0] < polls:
        assert time.monotonic() < deadline, "statistics never arrived"
        time.sleep(0.2)
    updates, hot = after[0] - before[0], after[1] - before[1]
    assert updates == polls
    # Not all of them: a HOT update needs room on its page, which page pruning makes, and
    # any snapshot open in this database meanwhile (autovacuum's ANALYZE of its catalogs)
    # holds pruning back. Before 0006, with next_poll_at indexed, none of them was HOT.
    assert hot >= polls // 2, f"{hot} of {updates} poll updates were HOT"


def _update_counts(store: Store) -> tuple[int, int]:
    with store.engine.connect() as conn:
        conn.execute(sa.text("SELECT pg_stat_clear_snapshot()"))
        row = conn.execute(sa.text(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
            "WHERE relname = 'flexpipe_jobs'"
        )).one()
    return int(row[0]), int(row[1])


def test_sqlite_reads_an_index_for_every_sweeper_list_and_retry_query(tmp_path: Any) -> None:
    """SQLite has no HOT updates, but the same queries must search an index, never scan."""
    url = f"sqlite:///{tmp_path / 'plans.db'}"
    upgrade(url)
    store = Store(make_engine(url))
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    sa.event.listen(store.engine, "before_cursor_execute", record)
    now = datetime.now(UTC)
    store.take_due_polls(overdue_after=60, horizon=5, limit=10)
    store.take_due_submits(horizon=5, limit=10)
    store.take_stale_pending(stale_after=120, limit=10)
    store.past_deadline(limit=10)
    store.take_due_callbacks(overdue_after=30, limit=10)
    store.take_due_bulk_callbacks(overdue_after=30, limit=10)
    store.list_jobs(limit=50)
    store.list_jobs(status="failed", limit=50)
    store.failed_since([JobStatus.FAILED], now, 10)
    store.prune_jobs(now, limit=10)
    sa.event.remove(store.engine, "before_cursor_execute", record)
    assert len(seen) == 10
    with store.engine.connect() as conn:
        raw = conn.connection.driver_connection
        for statement, parameters in seen:
            steps = [r[3] for r in raw.execute("EXPLAIN QUERY PLAN " + statement, parameters)]
            scans = [s for s in steps if s.startswith("SCAN") and "USING" not in s]
            assert not scans, (statement, steps)
    store.dispose()
