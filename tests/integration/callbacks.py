"""A callback task for the integration tests: records each delivery in SQL.

The worker imports this module (``FLEXPIPE_IMPORTS``); counts come from the table.
Each delivery is one row with the Celery task id it came as, so the tests can tell
what flexpipe sent (one message per job outcome, ``messages``) from what Celery
delivered (``counts``: a message is delivered again when the worker running it is
killed before it acks, as for any ``acks_late`` task).
"""

from __future__ import annotations

import sqlalchemy as sa
from celery import Task

from flexpipe.config.celery import app
from flexpipe.store import TRANSIENT_DB_ERRORS
from flexpipe.tasks.runtime import runtime

calls = sa.Table(
    "test_callback_calls",
    sa.MetaData(),
    sa.Column("n", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(32), nullable=False),
    sa.Column("task_id", sa.String(64), nullable=False),
    sa.Column("note", sa.String(64)),
)


@app.task(
    name="tests.record_callback",
    bind=True,
    # Like any app's callback, retry while the database is away (the fault suite kills it).
    autoretry_for=(sa.exc.OperationalError, *TRANSIENT_DB_ERRORS),
    retry_backoff=0.2,
    retry_backoff_max=2,
    max_retries=30,
)
def record_callback(self: Task, job_id: str, note: str = "") -> None:
    engine = runtime().store.engine
    with engine.begin() as conn:
        conn.execute(calls.insert().values(job_id=job_id, task_id=self.request.id, note=note))


def create_table(engine: sa.Engine) -> None:
    calls.metadata.create_all(engine)


def counts(engine: sa.Engine) -> dict[str, int]:
    """Deliveries per job (or bulk) id."""
    query = sa.select(calls.c.job_id, sa.func.count()).group_by(calls.c.job_id)
    with engine.connect() as conn:
        return {job_id: n for job_id, n in conn.execute(query)}


def messages(engine: sa.Engine) -> dict[str, int]:
    """Distinct callback messages (task ids) per job (or bulk) id."""
    query = sa.select(calls.c.job_id, sa.func.count(sa.distinct(calls.c.task_id))).group_by(
        calls.c.job_id
    )
    with engine.connect() as conn:
        return {job_id: n for job_id, n in conn.execute(query)}
