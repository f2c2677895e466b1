"""Figure 5, history: do the live operations stay flat under a year of finished jobs?

Two PostgreSQL databases, migrated to head and filled by generated SQL in the shape the
store writes (:data:`FILL`): one with 10,000 jobs in flight only, one with N finished
jobs (spread over a year: a tenth failed, half in bulks of 1,000, each with its result
and attempt) plus the same 10,000 in flight. On both, after ANALYZE, the median time of
one full sweep (every sweeper query, as ``flexpipe.sweep`` runs them), ``enqueue`` (its
insert), ``list``, ``retry --status failed --since 1d`` (its read) and ``bulk status``;
then bytes per job and prune's rate on the large one.

``python -m benchmarks.history --jobs 200000`` (``make bench-quick`` size) or
``--jobs 5000000`` (``make bench``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from benchmarks.services import Cleanup, create_database

IN_FLIGHT = 10_000
REPEAT = 15

#: One statement per table; ``:lo``..``:hi`` number the finished jobs of one fill chunk.
#: Finished jobs finish ``g`` steps of a year apart (job 1 newest); every tenth failed;
#: jobs 1..N/2 belong to bulks of 1,000 (``bulk_<n>``), finished like their last item.
FILL_FINISHED = [
    """
    INSERT INTO flexpipe_jobs (id, status, bulk_id, model, requested_tier, mode, request,
        response_id, attempt, poll_count, poll_seq, parked, escalate, deadline_at,
        created_at, dispatched_at, submitted_at, started_at, finished_at, updated_at)
    SELECT md5('f' || g), CASE WHEN g % 10 = 0 THEN 'failed' ELSE 'completed' END,
        CASE WHEN g <= CAST(:n AS integer) / 2 THEN 'bulk_' || ((g - 1) / 1000) END,
        'Qwen/Qwen3-30B-A3B-Instruct-2507', 'flex', 'background',
        json_build_object('model', 'Qwen/Qwen3-30B-A3B-Instruct-2507', 'input',
            repeat('Ticket ' || g || ': the lift stopped between floors. ', 12),
            'instructions', 'Summarise in one sentence.', 'service_tier', 'flex',
            'mode', 'background', 'metadata', json_build_object()),
        'resp_' || md5('r' || g), 1, 4, 4, false, false, t + interval '75 min', t, t,
        t + interval '1 s', t + interval '2 min', t + interval '5 min', t + interval '5 min'
    FROM (SELECT g, now() - g * (interval '365 days' / CAST(:n AS integer)) AS t
          FROM generate_series(CAST(:lo AS integer), CAST(:hi AS integer)) g) s
    """,
    """
    INSERT INTO flexpipe_results (job_id, status, response_id, output, input_tokens,
        cached_tokens, output_tokens, reasoning_tokens, total_tokens, served_tier,
        error_code, error_message, provider_created_at, provider_completed_at, latency_s,
        stored_at)
    SELECT md5('f' || g), CASE WHEN g % 10 = 0 THEN 'failed' ELSE 'completed' END,
        'resp_' || md5('r' || g),
        json_build_array(json_build_object('id', 'msg_' || md5('m' || g), 'type', 'message',
            'role', 'assistant', 'status', 'completed', 'content', json_build_array(
            json_build_object('type', 'output_text', 'annotations', json_build_array(),
            'text', repeat('The lift on floor ' || g % 7 || ' stopped twice. ', 20))))),
        180, 0, 220, 0, 400, 'flex',
        CASE WHEN g % 10 = 0 THEN 'server_error' END,
        CASE WHEN g % 10 = 0 THEN 'The model failed to answer.' END,
        t + interval '1 s', t + interval '4 min', 240.0, t + interval '5 min'
    FROM (SELECT g, now() - g * (interval '365 days' / CAST(:n AS integer)) AS t
          FROM generate_series(CAST(:lo AS integer), CAST(:hi AS integer)) g) s
    """,
    """
    INSERT INTO flexpipe_attempts (job_id, attempt, response_id, service_tier, status,
        submitted_at, finished_at)
    SELECT md5('f' || g), 1, 'resp_' || md5('r' || g), 'flex',
        CASE WHEN g % 10 = 0 THEN 'failed' ELSE 'completed' END, t + interval '1 s',
        t + interval '5 min'
    FROM (SELECT g, now() - g * (interval '365 days' / CAST(:n AS integer)) AS t
          FROM generate_series(CAST(:lo AS integer), CAST(:hi AS integer)) g) s
    """,
]
FILL_BULKS = """
INSERT INTO flexpipe_bulks (id, name, total, done, completed, failed, incomplete, cancelled,
    expired, created_at, finished_at, on_complete_sent_at)
SELECT 'bulk_' || b, 'nightly', 1000, 1000, 900, 100, 0, 0, 0, t, t + interval '5 min',
    t + interval '5 min'
FROM (SELECT b, now() - (b * 1000 + 1) * (interval '365 days' / CAST(:n AS integer)) AS t
      FROM generate_series(0, CAST(:n AS integer) / 2000 - 1) b) s
"""
#: The live jobs: in flight, polled every so often, none due now; one live bulk of 1,000.
FILL_LIVE = [
    """
    INSERT INTO flexpipe_bulks (id, name, total, done, completed, failed, incomplete,
        cancelled, expired, created_at)
    VALUES ('bulk_live', 'live', 1000, 0, 0, 0, 0, 0, 0, now())
    """,
    """
    INSERT INTO flexpipe_jobs (id, status, bulk_id, model, requested_tier, mode, request,
        response_id, attempt, poll_count, poll_seq, next_poll_at, parked, escalate,
        deadline_at, created_at, dispatched_at, submitted_at, started_at, updated_at)
    SELECT md5('l' || g), CASE WHEN g % 2 = 0 THEN 'in_progress' ELSE 'submitted' END,
        CASE WHEN g <= 1000 THEN 'bulk_live' END,
        'Qwen/Qwen3-30B-A3B-Instruct-2507', 'flex', 'background',
        json_build_object('model', 'Qwen/Qwen3-30B-A3B-Instruct-2507', 'input',
            repeat('Ticket ' || g || ': the lift stopped between floors. ', 12)),
        'resp_' || md5('lr' || g), 1, 1, 1, now() + (g % 300) * interval '1 s', g % 3 = 0,
        false, now() + interval '1 hour', now() - interval '1 min',
        now() - interval '1 min', now() - interval '1 min',
        CASE WHEN g % 2 = 0 THEN now() END, now()
    FROM generate_series(1, CAST(:live AS integer)) g
    """,
    """
    INSERT INTO flexpipe_attempts (job_id, attempt, response_id, service_tier, status,
        submitted_at)
    SELECT md5('l' || g), 1, 'resp_' || md5('lr' || g), 'flex', 'submitted',
        now() - interval '1 min'
    FROM generate_series(1, CAST(:live AS integer)) g
    """,
]
CHUNK = 250_000


def fill(url: str, finished: int, log: Callable[[str], None]) -> None:
    """Fill a migrated database: ``finished`` finished jobs plus the live ones; ANALYZE."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            for statement in FILL_LIVE:
                conn.execute(sa.text(statement), {"live": IN_FLIGHT})
            if finished:
                conn.execute(sa.text(FILL_BULKS), {"n": finished})
        for lo in range(1, finished + 1, CHUNK):
            hi = min(finished, lo + CHUNK - 1)
            with engine.begin() as conn:
                for statement in FILL_FINISHED:
                    conn.execute(sa.text(statement), {"n": finished, "lo": lo, "hi": hi})
            log(f"fig 5: filled {hi:,} of {finished:,} finished jobs")
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM ANALYZE"))
    finally:
        engine.dispose()


def median_ms(call: Callable[[], Any], repeat: int = REPEAT) -> float:
    call()  # warm: the statement cache, the pool, the pages
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def operations(url: str) -> dict[str, float]:
    """Median ms of each measured operation on one filled database."""
    from flexpipe.models import build_request
    from flexpipe.states import JobStatus
    from flexpipe.store import NewJob, Store

    store = Store.from_url(url)
    try:

        def sweep() -> None:  # what flexpipe.sweep asks SQL, with its default settings
            store.take_due_polls(overdue_after=60, horizon=5, limit=2000)
            store.take_due_submits(horizon=5, limit=2000)
            store.take_stale_pending(stale_after=120, limit=2000)
            store.past_deadline(limit=2000)
            store.take_due_callbacks(overdue_after=30, limit=2000)
            store.take_due_bulk_callbacks(overdue_after=30, limit=2000)

        request = build_request("A new ticket: the lift stopped.", model="m")
        since = datetime.now(UTC) - timedelta(days=1)
        return {
            "sweep": median_ms(sweep),
            "enqueue": median_ms(lambda: store.add_job(NewJob(request=request))),
            "list": median_ms(lambda: store.list_jobs(limit=50)),
            "retry": median_ms(lambda: store.failed_since([JobStatus.FAILED], since, 10_000)),
            "bulk status": median_ms(lambda: store.get_bulk("bulk_live")),
        }
    finally:
        store.dispose()


def table_bytes(url: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    sa.text(
                        "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c "
                        "WHERE c.relname IN ('flexpipe_jobs', 'flexpipe_results', "
                        "'flexpipe_attempts', 'flexpipe_bulks')"
                    )
                ).scalar_one()
            )
    finally:
        engine.dispose()


def figure5(finished: int, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run figure 5 with ``finished`` finished jobs; return its numbers."""
    from flexpipe.retention import prune
    from flexpipe.store import Store

    cleanup = Cleanup()
    try:
        _, small = create_database(cleanup)
        _, large = create_database(cleanup)
        fill(small, 0, log)
        t = time.monotonic()
        fill(large, finished, log)
        fill_s = time.monotonic() - t
        base = operations(small)
        history = operations(large)
        size = table_bytes(large)
        log(f"fig 5: {size / 1e9:.2f} GB for {finished + IN_FLIGHT:,} jobs")
        store = Store.from_url(large)
        try:
            t = time.monotonic()
            pruned = prune(store, timedelta(days=30), batch=1000)
            prune_s = time.monotonic() - t
        finally:
            store.dispose()
        return {
            "finished": finished,
            "in_flight": IN_FLIGHT,
            "fill_s": round(fill_s, 1),
            "ms_at_10k": base,
            "ms_with_history": history,
            "ratio": {k: history[k] / base[k] for k in base},
            "bytes_per_job": size / (finished + IN_FLIGHT),
            "pruned": pruned.jobs,
            "pruned_bulks": pruned.bulks,
            "prune_s": round(prune_s, 2),
            "prune_jobs_per_s": pruned.jobs / prune_s if prune_s else 0.0,
        }
    finally:
        cleanup.run()


def report(out: dict[str, Any]) -> str:
    """Figure 5's table in Markdown."""
    lines = [
        f"| operation | {IN_FLIGHT:,} jobs (ms) | {out['finished']:,} finished + "
        f"{IN_FLIGHT:,} (ms) | ratio | target |",
        "|---|---|---|---|---|",
    ]
    for name, ms in out["ms_at_10k"].items():
        ratio = out["ratio"][name]
        ok = "met" if ratio <= 1.5 else "NOT met"
        lines.append(
            f"| {name} | {ms:.2f} | {out['ms_with_history'][name]:.2f} | {ratio:.2f}x | "
            f"≤ 1.5x {ok} |"
        )
    rate = out["prune_jobs_per_s"]
    lines.append(f"| bytes per job | | {out['bytes_per_job']:,.0f} | | |")
    lines.append(
        f"| prune (30d: {out['pruned']:,} jobs, {out['pruned_bulks']:,} bulks) | | "
        f"{rate:,.0f} jobs/s | | ≥ 5,000/s {'met' if rate >= 5000 else 'NOT met'} |"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=200_000, help="finished jobs to fill")
    args = parser.parse_args()
    out = figure5(args.jobs, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(report(out))
    print(json.dumps(out, indent=1), file=sys.stderr)


if __name__ == "__main__":
    main()
