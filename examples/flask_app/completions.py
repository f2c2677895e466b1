"""The callback flexpipe sends when a summary job ends, and this app's table recording it.

The table keeps one row per call (so the tests can count calls); a real app would update
its own row for the job instead, which is safe to run twice.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import sqlalchemy as sa
from celery import shared_task

import flexpipe

if TYPE_CHECKING:
    from flask import Flask

table = sa.Table(
    "completions",
    sa.MetaData(),
    sa.Column("n", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(32), nullable=False, index=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
)


@shared_task
def summary_ready(job_id: str) -> None:
    """Record that flexpipe finished ``job_id``; runs in a worker that imports this module."""
    status = flexpipe.get(job_id).status.value
    record(_flask_app().config["DATABASE_URL"], job_id, status)


def record(database_url: str, job_id: str, status: str) -> None:
    with engine(database_url).begin() as conn:
        conn.execute(table.insert().values(job_id=job_id, status=status))


def counts(database_url: str) -> dict[str, int]:
    """How many times the callback ran, per job id."""
    query = sa.select(table.c.job_id, sa.func.count()).group_by(table.c.job_id)
    with engine(database_url).connect() as conn:
        return {job_id: n for job_id, n in conn.execute(query)}


def create_table(database_url: str) -> None:
    table.metadata.create_all(engine(database_url))


@functools.cache
def engine(database_url: str) -> sa.Engine:
    """One engine per database and process."""
    return sa.create_engine(database_url)


@functools.cache
def _flask_app() -> Flask:
    """The app (for its config) in a worker process: built once, on the first callback."""
    from examples.flask_app.app import create_app

    return create_app()
