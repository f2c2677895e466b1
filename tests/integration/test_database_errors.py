"""Database errors raised by a real PostgreSQL reach flexpipe as what they mean.

Each fault is made inside one session of a fresh database (a read-only session, a lock
held by another session, a missing table, a duplicate key), so the shared server is
left as it was. The unit test ``tests/unit/test_database_errors.py`` covers the SQLSTATEs
that cannot be made cheaply here (shutdown, disk full, deadlock); too many connections is
made on a disposable server in ``tests/faults/``.
"""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from flexpipe import errors
from flexpipe.store import NewJob, Store
from flexpipe.store.engine import make_engine
from tests.unit.test_store import _job

pytestmark = pytest.mark.integration


@pytest.fixture
def pg_store(postgres_url: str):
    url = postgres_url.replace("postgresql://", "postgresql+psycopg://", 1)
    store = Store(make_engine(url))
    store.create_tables()
    yield store
    store.dispose()


def test_read_only_is_unavailable_and_retried_until_writable(pg_store: Store) -> None:
    job_id, _ = pg_store.add_job(_job())
    url = pg_store.engine.url
    read_only = Store(
        make_engine(
            url.render_as_string(hide_password=False),
            connect_args={"options": "-c default_transaction_read_only=on"},
        ),
        db_retry_s=0.3,
    )
    try:
        with pytest.raises(errors.DatabaseUnavailable) as caught:
            read_only.claim_submit(job_id, 60)
        assert caught.value.sqlstate == "25006"
        # A retrying write keeps trying, then gives up with the same meaning.
        with pytest.raises(errors.DatabaseUnavailable):
            read_only.release_submit(job_id)
    finally:
        read_only.dispose()
    assert pg_store.claim_submit(job_id, 60) is not None


def test_lock_timeout_is_unavailable(pg_store: Store) -> None:
    job_id, _ = pg_store.add_job(_job())
    waiter = Store(
        make_engine(
            pg_store.engine.url.render_as_string(hide_password=False),
            connect_args={"options": "-c lock_timeout=100"},
        )
    )
    holding = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with pg_store.engine.begin() as conn:
            conn.execute(
                sa.text("SELECT id FROM flexpipe_jobs WHERE id = :id FOR UPDATE"), {"id": job_id}
            )
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(10)
        with pytest.raises(errors.DatabaseUnavailable) as caught:
            waiter.claim_submit(job_id, 60)
        assert caught.value.sqlstate == "55P03"
    finally:
        release.set()
        holder.join()
        waiter.dispose()


def test_constraint_and_statement_errors_are_rejected(pg_store: Store) -> None:
    job_id, _ = pg_store.add_job(_job())
    with pytest.raises(errors.ConstraintViolated) as caught:
        pg_store.add_jobs([NewJob(request=_job().request, id=job_id)])
    assert caught.value.sqlstate == "23505"
    with pg_store.engine.connect() as conn, pytest.raises(errors.DatabaseRejected) as bad:
        conn.execute(sa.text("SELECT * FROM no_such_table"))
    assert bad.value.sqlstate == "42P01"
