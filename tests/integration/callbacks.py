"""A callback task for the integration tests: records each call in SQL.

The worker imports this module (``FLEXPIPE_IMPORTS``); counts come from the table.
"""

from __future__ import annotations

import sqlalchemy as sa

from config.celery import app
from tasks.runtime import runtime

calls = sa.Table(
    "test_callback_calls",
    sa.MetaData(),
    sa.Column("n", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(32), nullable=False),
    sa.Column("note", sa.String(64)),
)


@app.task(
    name="tests.record_callback",
    # Like any app's callback, retry while the database is away (the fault suite kills it).
    autoretry_for=(sa.exc.OperationalError,),
    retry_backoff=0.2,
    retry_backoff_max=2,
    max_retries=30,
)
def record_callback(job_id: str, note: str = "") -> None:
    engine = runtime().store.engine
    with engine.begin() as conn:
        conn.execute(calls.insert().values(job_id=job_id, note=note))


def create_table(engine: sa.Engine) -> None:
    calls.metadata.create_all(engine)


def counts(engine: sa.Engine) -> dict[str, int]:
    query = sa.select(calls.c.job_id, sa.func.count()).group_by(calls.c.job_id)
    with engine.connect() as conn:
        return {job_id: n for job_id, n in conn.execute(query)}
