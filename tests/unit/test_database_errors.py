"""The driver → flexpipe database error boundary: every SQLSTATE class the store can meet
is classified by what it means, through the store's own engine.

psycopg's errors are built the way the driver builds them (``psycopg.errors.lookup``)
and wrapped the way SQLAlchemy wraps them (``DBAPIError.instance``); SQLite's come from a
real second connection holding the write lock.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from flexpipe import errors
from flexpipe.store import TRANSIENT_DB_ERRORS, NewJob, Store
from flexpipe.store.engine import classify, make_engine
from tests.unit.test_store import _job

TRANSIENT = {
    "25006": "read_only_sql_transaction",
    "57P01": "admin_shutdown",
    "57P02": "crash_shutdown",
    "57P03": "cannot_connect_now",
    "08000": "connection_exception",
    "08001": "sqlclient_unable_to_establish_sqlconnection",
    "08003": "connection_does_not_exist",
    "08006": "connection_failure",
    "53000": "insufficient_resources",
    "53100": "disk_full",
    "53200": "out_of_memory",
    "53300": "too_many_connections",
    "40001": "serialization_failure",
    "40P01": "deadlock_detected",
    "55P03": "lock_not_available",
    "57014": "query_canceled",
}
PERMANENT = {
    "23505": errors.ConstraintViolated,  # unique_violation
    "23503": errors.ConstraintViolated,  # foreign_key_violation
    "23502": errors.ConstraintViolated,  # not_null_violation
    "22001": errors.DatabaseRejected,  # string_data_right_truncation
    "22P02": errors.DatabaseRejected,  # invalid_text_representation
    "42P01": errors.DatabaseRejected,  # undefined_table
    "42601": errors.DatabaseRejected,  # syntax_error
    "42501": errors.DatabaseRejected,  # insufficient_privilege
}


def _wrapped(sqlstate: str) -> sa.exc.DBAPIError:
    """A psycopg error for ``sqlstate`` as SQLAlchemy hands it over (the driver's class
    picks SQLAlchemy's: a read-only transaction arrives as ``InternalError``)."""
    orig = psycopg.errors.lookup(sqlstate)(f"server says {sqlstate}")
    return sa.exc.DBAPIError.instance(
        "UPDATE flexpipe_jobs SET status = %(s)s", {}, orig, psycopg.Error
    )


@pytest.mark.parametrize("sqlstate", sorted(TRANSIENT))
def test_transient_sqlstates_are_database_unavailable(sqlstate: str) -> None:
    assert psycopg.errors.lookup(sqlstate) is psycopg.errors.lookup(TRANSIENT[sqlstate].upper())
    err = classify(_wrapped(sqlstate))
    assert type(err) is errors.DatabaseUnavailable
    assert err.sqlstate == sqlstate
    assert isinstance(err, TRANSIENT_DB_ERRORS)


def test_read_only_reaches_sqlalchemy_as_internal_error() -> None:
    # The cause of issue 15's double creates: the class name says nothing about meaning.
    assert type(_wrapped("25006")) is sa.exc.InternalError


@pytest.mark.parametrize("sqlstate", sorted(PERMANENT))
def test_permanent_sqlstates_are_rejected(sqlstate: str) -> None:
    err = classify(_wrapped(sqlstate))
    assert type(err) is PERMANENT[sqlstate]
    assert isinstance(err, errors.DatabaseRejected)
    assert not isinstance(err, TRANSIENT_DB_ERRORS)


def test_connection_errors_without_sqlstate_are_transient() -> None:
    orig = psycopg.OperationalError("connection failed: Connection refused")
    wrapped = sa.exc.DBAPIError.instance("SELECT 1", {}, orig, psycopg.Error)
    assert type(classify(wrapped)) is errors.DatabaseUnavailable
    closed = psycopg.InterfaceError("the connection is closed")
    assert type(classify(closed, disconnect=True)) is errors.DatabaseUnavailable


def test_sqlite_messages() -> None:
    for message in ("database is locked", "database table is locked", "database or disk is full"):
        assert type(classify(sqlite3.OperationalError(message))) is errors.DatabaseUnavailable
    assert type(classify(sqlite3.OperationalError("no such table: x"))) is (
        errors.DatabaseRejected
    )
    assert type(classify(sqlite3.IntegrityError("UNIQUE constraint failed"))) is (
        errors.ConstraintViolated
    )


def test_the_store_raises_flexpipe_errors_from_the_driver(tmp_path: Path) -> None:
    """Through a real engine: a held SQLite write lock is DatabaseUnavailable, a missing
    table is DatabaseRejected, and a duplicate key is ConstraintViolated."""
    path = tmp_path / "locked.db"
    store = Store(make_engine(f"sqlite:///{path}", connect_args={"timeout": 0.05}))
    store.create_tables()
    job_id, _ = store.add_job(_job())
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(errors.DatabaseUnavailable, match="locked"):
            store.claim_submit(job_id, 60)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert store.claim_submit(job_id, 60) is not None
    with pytest.raises(errors.ConstraintViolated):
        store.add_jobs([NewJob(request=_job().request, id=job_id)])
    with store.engine.begin() as conn, pytest.raises(errors.DatabaseRejected):
        conn.execute(sa.text("SELECT * FROM no_such_table"))
    store.dispose()

