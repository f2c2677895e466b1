"""The disposable servers the fault scenarios harm (tests/services.py) do what they say,
touch nothing else, and leave no process behind; the session guard notices harm."""

from __future__ import annotations

import psycopg
import pytest
import sqlalchemy as sa

from tests.services import PostgresServer, RedisServer, SharedServicesGuard, process_alive

pytestmark = [pytest.mark.integration]


def test_redis_takes_options_and_its_faults_reach_only_itself(redis_factory) -> None:
    one = redis_factory(options={"maxmemory": "10mb", "maxmemory-policy": "noeviction"})
    other = redis_factory()
    assert one.port != other.port and 6379 not in (one.port, other.port)
    assert one.cli("config", "get", "maxmemory-policy").stdout.split() == [
        b"maxmemory-policy", b"noeviction"]
    assert one.cli("config", "get", "save").stdout.split() == [b"save"]  # nothing on disk
    for server in (one, other):
        server.cli("set", "k", "v")
    one.flushall()
    assert one.count("dbsize") == 0 and other.count("dbsize") == 1
    pid = one.pid
    assert pid is not None
    one.restart(0.1)
    assert one.pid != pid and not process_alive(pid)
    assert one.ping() and one.count("dbsize") == 0 and len(one.outages) == 1
    assert other.count("dbsize") == 1
    other.kill()
    assert not other.ping() and other.pid is None


def test_redis_with_persistence_keeps_what_it_saved(redis_factory) -> None:
    server: RedisServer = redis_factory(persistence=True)
    server.cli("set", "k", "v")
    server.restart(save=True)
    assert server.cli("get", "k").stdout.strip() == b"v"


def test_postgres_read_only_window_refuses_writes_of_open_sessions(disposable_postgres) -> None:
    pg: PostgresServer = disposable_postgres
    engine = sa.create_engine(pg.create_database())
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("create table t (a int)"))
        with engine.connect() as conn:  # opened before the window, kept in the pool
            conn.execute(sa.text("select 1"))
            conn.commit()
            with pg.read_only():
                with pytest.raises(sa.exc.InternalError) as refused:
                    conn.execute(sa.text("insert into t values (1)"))
                assert refused.value.orig.sqlstate == "25006"
                conn.rollback()
                assert conn.execute(sa.text("select count(*) from t")).scalar_one() == 0
                conn.rollback()  # a transaction begun in the window stays read-only
            conn.execute(sa.text("insert into t values (2)"))
            conn.commit()
        with engine.connect() as conn:
            assert conn.execute(sa.text("select a from t")).scalars().all() == [2]
    finally:
        engine.dispose()


def test_postgres_killed_recovers_what_was_committed(disposable_postgres) -> None:
    pg: PostgresServer = disposable_postgres
    url = pg.create_database()
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("create table t (a int)"))
            conn.execute(sa.text("insert into t values (1)"))
        with engine.connect() as conn:
            backend = conn.execute(sa.text("select pg_backend_pid()")).scalar_one()
        postmaster, started = pg.pid, pg.postmaster_start_time()
        assert postmaster is not None
        pg.kill()
        assert not process_alive(postmaster) and not process_alive(backend)
        pg.start()
        assert pg.postmaster_start_time() > started
        assert "database system was interrupted" in pg.log_tail(200)  # crash recovery ran
        engine.dispose()  # the pooled connections died with the server
        with engine.connect() as conn:
            assert conn.execute(sa.text("select a from t")).scalars().all() == [1]
    finally:
        engine.dispose()


def test_postgres_max_connections_refuses_more_but_keeps_the_admin_slot(
    postgres_factory,
) -> None:
    pg: PostgresServer = postgres_factory(settings={"max_connections": 6})
    pg.create_role("app")
    url = pg.create_database(owner="app").replace("postgresql+psycopg", "postgresql")
    # superuser_reserved_connections (3) of the 6 are for the admin.
    held = [psycopg.connect(url) for _ in range(3)]
    try:
        with pytest.raises(psycopg.OperationalError) as refused:
            psycopg.connect(url)
        # SQLSTATE 53300 at the server; libpq reports a refused connection without it.
        assert "remaining connection slots are reserved" in str(refused.value)
        assert pg.execute("select count(*) from pg_stat_activity where usename = 'app'") == [
            (3,)]
    finally:
        for conn in held:
            conn.close()
    pg.set_max_connections(8)
    assert pg.execute("show max_connections") == [("8",)]


def test_guard_notices_a_flush_a_restart_and_an_outage(
    redis_factory, disposable_postgres
) -> None:
    redis_server: RedisServer = redis_factory(persistence=True)
    pg: PostgresServer = disposable_postgres

    def guard() -> SharedServicesGuard:
        g = SharedServicesGuard("127.0.0.1", redis_server.port, pg.url())
        g.start()
        assert g.redis_run_id and g.postgres_started
        return g

    untouched = guard()
    redis_server.cli("-n", "0", "set", "other", "data")
    assert untouched.check() == []
    assert redis_server.count("-n", "15", "dbsize") == 0  # the sentinel is removed

    flushed = guard()
    redis_server.flushall()
    (harm,) = flushed.check()
    assert "lost the sentinel key" in harm

    restarted = guard()
    redis_server.restart(save=True)  # the key survives, the restart is seen anyway
    assert [h for h in restarted.check() if "was restarted" in h]

    pg_restarted = guard()
    pg.restart()
    (harm,) = pg_restarted.check()
    assert "PostgreSQL" in harm and "was restarted" in harm

    gone = guard()
    redis_server.kill()
    pg.kill()
    harm_list = gone.check()
    assert len(harm_list) == 2 and all("no longer reachable" in h for h in harm_list)
