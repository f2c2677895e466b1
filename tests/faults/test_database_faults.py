"""A database that refuses work for a few seconds (issue 15 §1), on a disposable PostgreSQL.

Three ways PostgreSQL says no while 300 jobs are being submitted, polled and stored:

- read-only for ~3 s (``default_transaction_read_only``, as after a failover): every
  write fails with SQLSTATE 25006;
- ``max_connections`` reached for ~3 s: the test holds every free slot, and drops the
  stack's own connections so its processes must reconnect and are refused (53300);
- the server SIGKILLed while stores are committing, down ~1 s, then crash recovery.

Each time: every job finishes, no job is created twice at the provider, one result row
and one callback message per job. Before SQLSTATE classification, the read-only window
alone created 5 of 300 jobs twice and made hundreds of tasks give up.
"""

from __future__ import annotations

import time

import psycopg
import pytest
import sqlalchemy as sa

from flexpipe.errors import DatabaseUnavailable
from tests.faults.conftest import (
    JOBS,
    assert_nothing_lost_nothing_twice,
    enqueue_jobs,
    progress,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

#: Long enough polls that the window falls on jobs in every phase (submitting, in flight,
#: being stored), not on a run that is already over.
IN_FLIGHT = {"FLEXPIPE_POLL_FIRST_DELAY": "20", "FLEXPIPE_POLL_MAX_DELAY": "50"}
#: How long each refusal lasts.
WINDOW_S = 3.0


def _done(stack, ids) -> int:
    counts = progress(stack, ids)
    return sum(n for s, n in counts.items() if s not in ("pending", "submitted", "in_progress"))


def _mid_run(stack, ids) -> None:
    """Wait until some jobs are submitted and some are already being stored."""
    wait_until(lambda: progress(stack, ids).get("pending", 0) < JOBS * 0.8, 180, "submits",
               stack)


def test_postgres_read_only_for_a_few_seconds(scenario) -> None:
    sc = scenario(postgres=True, env=IN_FLIGHT)
    stack = sc.stack
    ids = enqueue_jobs()
    _mid_run(stack, ids)
    with sc.postgres.read_only():
        # Every write of this window fails with SQLSTATE 25006, reads still work.
        with pytest.raises(DatabaseUnavailable) as refused, stack.store.engine.begin() as c:
            c.execute(sa.text("create table read_only_probe (n int)"))
        assert refused.value.sqlstate == "25006"
        time.sleep(WINDOW_S)
    assert_nothing_lost_nothing_twice(sc, ids)


def _fill_connections(server) -> list[psycopg.Connection]:
    """Open connections to ``server`` until it refuses one (too many clients)."""
    held: list[psycopg.Connection] = []
    while True:
        try:
            held.append(psycopg.connect(server.url().replace("postgresql+psycopg", "postgresql"),
                                        autocommit=True, connect_timeout=10))
        except psycopg.OperationalError as exc:
            assert "too many clients" in str(exc) or "reserved" in str(exc), exc
            return held
        assert len(held) < 1000, "the server never refused a connection"


def test_postgres_max_connections_reached_mid_run(scenario, postgres_factory) -> None:
    # Small enough that the test fills it in a moment, big enough for the stack's pools.
    server = postgres_factory(settings={"max_connections": 40})
    sc = scenario(postgres=server, env=IN_FLIGHT)
    stack = sc.stack
    database = sa.engine.make_url(stack.env["FLEXPIPE_DATABASE_URL"]).database
    ids = enqueue_jobs()
    _mid_run(stack, ids)
    stack.store.engine.dispose()  # this process's own connections count too
    held = _fill_connections(server)
    refused = 0
    end = time.monotonic() + WINDOW_S
    try:
        while time.monotonic() < end:
            # The stack's open connections still work; drop them, so that its processes
            # must reconnect, and take the slots they free before they can.
            held[0].execute(
                "select pg_terminate_backend(pid) from pg_stat_activity "
                "where datname = %s and pid <> pg_backend_pid()", (database,))
            held += _fill_connections(server)
            refused += 1
            time.sleep(0.3)
    finally:
        for conn in held:
            conn.close()
    assert refused and len(held) > 10
    assert_nothing_lost_nothing_twice(sc, ids, redelivery=True)


def test_postgres_sigkilled_during_commits(scenario) -> None:
    sc = scenario(postgres=True, env=IN_FLIGHT)
    stack = sc.stack
    ids = enqueue_jobs()
    crashes = 0
    # Crash while submits record response ids, then while results are being stored.
    for ready in (
        lambda: progress(stack, ids).get("pending", 0) < JOBS * 0.7,
        lambda: _done(stack, ids) >= JOBS * 0.3,
    ):
        wait_until(ready, 180, "progress", stack)
        sc.postgres.restart(down_for=1.0, crash=True)  # SIGKILL, then crash recovery
        crashes += 1
    assert crashes == 2 and len(sc.postgres.outages) == 2
    # A callback whose commit died with the server is delivered again (same message).
    assert_nothing_lost_nothing_twice(sc, ids, redelivery=True)
