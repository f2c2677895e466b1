"""A Redis restart must not kill the worker (BENCHMARKS.md, "Changes suggested", item 7).

The worker runs on a disposable ``redis-server`` that this test starts on a free port
(``disposable_redis``, tests/services.py; the shared one on 6379 is left alone). Jobs are
in flight, their countdown polls waiting in the worker unacknowledged, when Redis is shut
down (nothing saved), left down for a moment and started empty again, several times.

Before ``config/kombu_redis.py``, kombu's teardown of the lost connection could end in
``AttributeError: 'NoneType' object has no attribute 'hostname'`` and the worker (with its
``-B`` sweeper) exited. That happens when the worker reads the end of a pub/sub socket
(pidbox, gossip) before that of its consumer's in-flight ``BRPOP``: every other restart
here drops the pub/sub connections just before the shutdown, so the unpatched worker dies
at the first restart nearly every run. The worker must be alive after every restart, and
every job must end stored exactly once: what Redis lost comes back through the sweeper.
"""

from __future__ import annotations

import datetime
import functools
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from flexpipe.emulator import EmulatorConfig, run_in_thread
from flexpipe.schema import jobs, results
from tests.faults.conftest import creates_per_job, enqueue_jobs, progress, wait_until
from tests.integration import callbacks
from tests.integration.stack import TIME_SCALE, Stack
from tests.services import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

JOBS = 40
RESTARTS = 5
#: Seconds Redis stays down: the worker tears the lost connection down meanwhile.
DOWN_FOR = 1.5
#: Jobs take 100-130 s at the emulator (scaled), so polls are in flight at every restart
#: (each restart takes up to ~15 s: the sweeper re-sends lost polls after 10 s).
EMULATOR_LATENCY = {"flex": "uniform:10000,13000"}
#: Polls every 1-5 s, held in the worker as countdown tasks (not parked in SQL), so the
#: worker holds unacknowledged messages and is mostly idle: its BRPOP is in flight.
WORKER_ENV = {
    "FLEXPIPE_POLL_FIRST_DELAY": "100",
    "FLEXPIPE_POLL_MAX_DELAY": "500",
    "FLEXPIPE_PARK_AFTER": "1000",
}
#: A callback published this long before Redis lost its data may be lost with it (see
#: ``_check_callbacks``).
CALLBACK_LOSS_WINDOW = datetime.timedelta(seconds=5)


def _connections(stack: Stack) -> int:
    try:
        return stack.log_path.read_text(errors="replace").count("Connected to redis://")
    except OSError:
        return 0


def _reconnected_or_exited(stack: Stack, connections_before: int) -> bool:
    assert stack.worker is not None
    return _connections(stack) > connections_before or stack.worker.poll() is not None


def _assert_worker_alive(stack: Stack, when: str) -> None:
    assert stack.worker is not None
    log = stack.log_path.read_text(errors="replace")
    assert stack.worker.poll() is None and "Unrecoverable error" not in log, (
        f"the worker died {when} (exit code {stack.worker.poll()})\n{stack.log_tail(60)}"
    )


def _idle_with_polls_held(redis: RedisServer, stack: Stack) -> bool:
    """Polls wait in the worker unacknowledged, and its queues are empty (so the worker
    is not at its prefetch limit and its BRPOP is in flight): the case that crashed."""
    return (
        redis.count("hlen", "unacked") >= 3
        and redis.count("llen", stack.env["FLEXPIPE_QUEUE"]) == 0
        and redis.count("llen", stack.env["FLEXPIPE_POLL_QUEUE"]) == 0
    )


def _check_stored_once(stack: Stack, emulator_url: str, ids: list[str]) -> None:
    stack.wait_terminal(ids, timeout=300)
    assert progress(stack, ids) == {"completed": len(ids)}
    with stack.store.engine.connect() as conn:
        rows = dict(
            conn.execute(
                sa.select(results.c.job_id, sa.func.count())
                .where(results.c.job_id.in_(ids))
                .group_by(results.c.job_id)
            ).all()
        )
    assert {j: rows.get(j, 0) for j in ids} == dict.fromkeys(ids, 1), "result rows"
    creates = creates_per_job(emulator_url)
    assert {j: creates.get(j, 0) for j in ids} == dict.fromkeys(ids, 1), "provider creates"


def _check_callbacks(stack: Stack, redis: RedisServer, ids: list[str]) -> None:
    """Each callback at most once, and each one sent outside an outage's window arrived.

    flexpipe marks a callback sent once it is published (``tasks/steps.py``), so one that
    Redis still held when it lost its data is gone: the sweeper does not send it again.
    Only callbacks published in the moments before a restart may be missing.
    """
    engine = stack.store.engine
    with engine.connect() as conn:
        sent = dict(conn.execute(sa.select(jobs.c.id, jobs.c.callback_sent_at)
                                 .where(jobs.c.id.in_(ids))).all())

    def at_risk(job_id: str) -> bool:
        at = sent.get(job_id)
        return at is not None and any(
            down - CALLBACK_LOSS_WINDOW <= at <= up for down, up in redis.outages
        )

    expected = [j for j in ids if not at_risk(j)]
    wait_until(lambda: all(callbacks.counts(engine).get(j) for j in expected),
               timeout=60, what="callbacks", stack=stack)
    time.sleep(1.5)  # a duplicate would arrive now
    calls = callbacks.counts(engine)
    twice = {j: calls[j] for j in ids if calls.get(j, 0) > 1}
    assert not twice, f"callbacks run more than once: {twice}"
    lost = [j for j in ids if not calls.get(j)]
    assert len(lost) <= len(ids) - len(expected), lost


def test_worker_survives_redis_restarts_with_polls_in_flight(
    disposable_redis: RedisServer, postgres_url: str, tmp_path: Path
) -> None:
    config = EmulatorConfig(time_scale=TIME_SCALE, slots=0, seed=33,
                            latency=EMULATOR_LATENCY)
    emulator = run_in_thread(config)
    stack = Stack(
        name="private-redis",
        data_dir=tmp_path / "stack",
        database_url=postgres_url,
        broker_url=disposable_redis.url(),
        emulator_url=emulator.url,
        extra_env=WORKER_ENV,
    )
    try:
        stack.start()
        wait_until(lambda: _connections(stack) >= 1, 60, "the worker to connect", stack)
        ids = enqueue_jobs(JOBS)
        wait_until(lambda: progress(stack, ids).get("pending", 0) == 0, 60, "submits", stack)
        for restart in range(1, RESTARTS + 1):
            wait_until(lambda: _idle_with_polls_held(disposable_redis, stack), 60,
                       f"polls held by the worker before restart {restart}", stack)
            before = _connections(stack)
            disposable_redis.restart(DOWN_FOR, pubsub_first=restart % 2 == 1)
            wait_until(functools.partial(_reconnected_or_exited, stack, before), 60,
                       f"the worker to reconnect after restart {restart}", stack)
            _assert_worker_alive(stack, f"at Redis restart {restart}")
        _check_stored_once(stack, emulator.url, ids)
        _check_callbacks(stack, disposable_redis, ids)
        _assert_worker_alive(stack, "after the restarts")
    finally:
        stack.stop()
        emulator.stop()
