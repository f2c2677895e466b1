"""Nothing lost, nothing twice: real faults against a real worker, Redis, PostgreSQL and
the emulator, 300 jobs per scenario, counted from SQL and the emulator's stats.

Scenarios that flush, restart or kill Redis or PostgreSQL run on disposable servers of
their own (``scenario(redis=True)``, ``scenario(postgres=True)``); the shared ones are
never harmed."""

from __future__ import annotations

import signal

import pytest
import sqlalchemy as sa

from tests.faults.conftest import (
    JOBS,
    assert_nothing_lost_nothing_twice,
    creates_per_job,
    enqueue_jobs,
    progress,
    wait_until,
)
from tests.integration.stack import emulator_call

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

SLOW_JOBS = {"FLEXPIPE_POLL_FIRST_DELAY": "50", "FLEXPIPE_POLL_MAX_DELAY": "100"}
#: Every countdown must stay below half the visibility timeout (config/settings.py).
SHORT_VISIBILITY = {"FLEXPIPE_VISIBILITY_TIMEOUT": "15", "FLEXPIPE_RETRY_MAX_AFTER": "5"}
#: A callback the killed worker had prefetched but not started was never received: the
#: sweeper re-sends it (same task id) after this many seconds. One it had started comes
#: back from Redis's unacked messages after the visibility timeout (flexpipe sets
#: kombu's unacked_restore_throttle to 1, so within ~10 s of that).
QUICK_RECEIPTS = {"FLEXPIPE_CALLBACK_RECEIPT_TIMEOUT": "5"}


def _done(stack, ids) -> int:
    counts = progress(stack, ids)
    return sum(n for s, n in counts.items() if s not in ("pending", "submitted", "in_progress"))


def test_worker_sigkill_during_submit_poll_and_store(scenario) -> None:
    # A worker killed between the provider's accept and flexpipe's commit resubmits that
    # job after its lease with the same Idempotency-Key; a provider that honours the key
    # (here: the emulator's replay mode) then bills it once. One that ignores keys
    # (Doubleword) would see a second create for such a job: see the README.
    # Messages the killed worker had reserved (callbacks among them: flexpipe counts a
    # callback as sent once published) wait in Redis's ``unacked`` hash until the
    # visibility timeout, 1 h by default; a short one brings them back within the test.
    # Only on a disposable Redis: any worker restores *every* queue's unacked messages
    # older than its own timeout, so on the shared Redis this would redeliver other
    # stacks' messages.
    sc = scenario(idempotency_replay=True, redis=True, env=SHORT_VISIBILITY | QUICK_RECEIPTS)
    stack = sc.stack
    ids = enqueue_jobs()
    kills = 0
    # Kill -9 the whole worker (pool children and embedded beat too) while jobs are being
    # submitted, while they are polled, and while results are being stored.
    for phase, ready in [
        ("submit", lambda: progress(stack, ids).get("pending", 0) < JOBS * 0.8),
        ("poll", lambda: progress(stack, ids).get("pending", 0) == 0),
        ("store", lambda: _done(stack, ids) > JOBS * 0.3),
    ]:
        wait_until(ready, timeout=120, what=f"{phase} phase", stack=stack)
        stack.stop_worker(signal.SIGKILL)
        kills += 1
        stack.start_worker()
    assert kills == 3
    # A callback running when the worker died is delivered again (same message).
    assert_nothing_lost_nothing_twice(sc, ids, redelivery=True)


def test_redis_flushed_mid_run(scenario) -> None:
    sc = scenario(env=SLOW_JOBS, redis=True)
    stack = sc.stack
    ids = enqueue_jobs()
    wait_until(lambda: progress(stack, ids).get("pending", 0) < JOBS * 0.5, 120, "submits",
               stack)
    sc.redis.flushall()
    assert_nothing_lost_nothing_twice(sc, ids)


def test_redis_restarted_with_nothing_on_disk(scenario) -> None:
    sc = scenario(env=SLOW_JOBS, redis=True)
    stack = sc.stack
    ids = enqueue_jobs()
    wait_until(lambda: progress(stack, ids).get("pending", 0) < JOBS * 0.5, 120, "submits",
               stack)
    sc.redis.cli("set", "flexpipe-test-marker", "1")
    sc.redis.restart()
    assert sc.redis.count("exists", "flexpipe-test-marker") == 0  # it came back empty
    assert_nothing_lost_nothing_twice(sc, ids)


def _kill_connections(database_url: str, admin_url: str) -> int:
    name = sa.engine.make_url(database_url).database
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        killed = conn.execute(
            sa.text(
                "select count(pg_terminate_backend(pid)) from pg_stat_activity "
                "where datname = :name and pid <> pg_backend_pid()"
            ),
            {"name": name},
        ).scalar_one()
    admin.dispose()
    return int(killed)


def test_postgres_connections_killed_mid_run(scenario) -> None:
    sc = scenario(postgres=True)
    stack = sc.stack
    ids = enqueue_jobs()
    killed = 0
    for target in (0.1, 0.4, 0.7):
        wait_until(lambda t=target: _done(stack, ids) >= JOBS * t, 180, "progress", stack)
        killed += _kill_connections(stack.env["FLEXPIPE_DATABASE_URL"], sc.postgres.admin_url)
    assert killed > 0
    # A callback whose commit lost its connection retries: same message, maybe run twice.
    assert_nothing_lost_nothing_twice(sc, ids, redelivery=True)


def test_postgres_restarted_mid_run(scenario) -> None:
    sc = scenario(postgres=True)
    stack = sc.stack
    ids = enqueue_jobs()
    wait_until(lambda: _done(stack, ids) >= JOBS * 0.2, 180, "progress", stack)
    started = sc.postgres.postmaster_start_time()
    sc.postgres.restart()
    assert sc.postgres.postmaster_start_time() > started
    assert_nothing_lost_nothing_twice(sc, ids, redelivery=True)


def test_emulator_faults_at_twenty_percent(scenario) -> None:
    faults = {
        "create_429_rate": 0.2, "create_5xx_rate": 0.2, "get_5xx_rate": 0.2,
        "get_429_rate": 0.2, "drop_rate": 0.2, "fail_rate": 0.2,
        "retry_after_s": 0.05, "read_lag_ms": 50,
    }
    sc = scenario(faults=faults)
    ids = enqueue_jobs()
    statuses = assert_nothing_lost_nothing_twice(
        sc, ids, allowed_statuses=frozenset({"completed", "failed"})
    )
    # Injected job failures are recorded with the provider's reason; nothing else fails.
    failed = sc.stack.store.list_jobs(status="failed", limit=JOBS)
    assert failed and all(job.error_message for job in failed)
    assert statuses.get("completed", 0) > JOBS * 0.5


def test_read_once_results_are_stored_on_the_first_terminal_read(scenario) -> None:
    sc = scenario(faults={"read_once": True})
    ids = enqueue_jobs()
    assert_nothing_lost_nothing_twice(sc, ids)


def test_emulator_restarted_mid_run_resubmits_by_policy(scenario) -> None:
    sc = scenario(env={"FLEXPIPE_LOST_RESPONSE": "resubmit", **SLOW_JOBS})
    stack = sc.stack
    ids = enqueue_jobs()
    wait_until(lambda: progress(stack, ids).get("pending", 0) == 0, 120, "submits", stack)
    sc.creates_before_reset.update(creates_per_job(sc.emulator_url))
    emulator_call(sc.emulator_url, "/_emulator/reset", {})  # it forgets every response
    assert_nothing_lost_nothing_twice(sc, ids, max_creates=2)
    resubmitted = [j for j in ids if stack.store.require_job(j).attempt == 2]
    assert resubmitted  # the jobs in flight at the restart got a second, stated attempt
    history = stack.store.attempts(resubmitted[0])
    assert [a["attempt"] for a in history] == [1, 2]
    assert history[0]["response_id"] != history[1]["response_id"]


def test_emulator_restarted_mid_run_fails_clearly_by_default(scenario) -> None:
    sc = scenario(env=SLOW_JOBS)
    stack = sc.stack
    ids = enqueue_jobs()
    wait_until(lambda: progress(stack, ids).get("pending", 0) == 0, 120, "submits", stack)
    sc.creates_before_reset.update(creates_per_job(sc.emulator_url))
    before = {j for j in ids if stack.store.require_job(j).terminal}
    emulator_call(sc.emulator_url, "/_emulator/reset", {})
    assert_nothing_lost_nothing_twice(
        sc, ids, allowed_statuses=frozenset({"completed", "failed"})
    )
    lost = stack.store.list_jobs(status="failed", limit=JOBS)
    assert lost
    for job in lost:
        assert job.id not in before
        assert job.error_code == "response_not_found"
        assert "does not know response" in (job.error_message or "")


def test_worker_sigkill_during_concurrent_bulk_submits(scenario) -> None:
    # A bulk's submits go out concurrently (submit_many's threads). A SIGKILL while several
    # creates of a chunk are in the air leaves those jobs leased and pending; the sweeper
    # resends them after the lease with the same Idempotency-Key, so each job is still
    # created (billed) once, stored once and called back once.
    from flexpipe.tasks import api

    sc = scenario(idempotency_replay=True)
    stack = sc.stack
    bulk_id = api.enqueue_many(
        [f"Ticket {i}: the lift on floor {i % 7} stopped twice." for i in range(JOBS)],
        callback="tests.record_callback",
    )
    ids = stack.store.bulk_job_ids(bulk_id)
    assert len(ids) == JOBS
    for share in (0.8, 0.4):
        wait_until(lambda s=share: progress(stack, ids).get("pending", 0) < JOBS * s, 120,
                   "bulk submits", stack)
        stack.stop_worker(signal.SIGKILL)
        stack.start_worker()
    assert_nothing_lost_nothing_twice(sc, ids, redelivery=True)
    bulk = stack.store.get_bulk(bulk_id)
    assert bulk is not None and bulk.done == JOBS and bulk.finished_at is not None
