"""Bulk jobs: one row of counters per bulk, kept in step with its items' outcomes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import sqlalchemy as sa

from flexpipe.models import Bulk, Job, Result
from flexpipe.schema import bulks, jobs, results
from flexpipe.states import JobStatus
from flexpipe.store.engine import Database, retrying
from flexpipe.store.jobs import new_rows
from flexpipe.store.records import NewJob, new_id
from flexpipe.store.rows import to_bulk, to_job, to_result
from flexpipe.store.statements import IN_FLIGHT_VALUES


class Bulks(Database):
    """Writes and reads of bulk jobs."""

    def add_bulk(
        self,
        new_jobs: Sequence[NewJob],
        *,
        name: str | None,
        on_complete: dict[str, Any] | None,
        chunk: int = 1000,
    ) -> tuple[str, list[tuple[str, bool]]]:
        """Insert a bulk job and its items (in chunks of ``chunk`` rows); return the ids.

        Items whose idempotency key already exists are not inserted again and do not count
        towards the bulk's total.
        """
        bulk_id = new_id()
        now = self.now()
        with self.engine.begin() as conn:
            items = [replace(job, bulk_id=bulk_id) for job in new_jobs]
            rows, out = new_rows(conn, items, now)
            conn.execute(
                bulks.insert().values(
                    id=bulk_id,
                    name=name,
                    total=len(rows),
                    done=0,
                    completed=0,
                    failed=0,
                    incomplete=0,
                    cancelled=0,
                    expired=0,
                    on_complete=on_complete,
                    created_at=now,
                    finished_at=now if not rows else None,
                    on_complete_due_at=now if not rows and on_complete else None,
                )
            )
            for start in range(0, len(rows), chunk):
                conn.execute(jobs.insert(), rows[start : start + chunk])
        return bulk_id, out

    def get_bulk(self, bulk_id: str) -> Bulk | None:
        """The bulk's counters, plus how many of its jobs are pending and in flight now.

        One statement, so the counters and the live counts come from one snapshot.
        """

        def live_count(statuses: list[str]) -> sa.ScalarSelect[int]:
            return (
                sa.select(sa.func.count())
                .select_from(jobs)
                .where(jobs.c.bulk_id == bulk_id, jobs.c.status.in_(statuses))
                .scalar_subquery()
            )

        query = sa.select(
            bulks,
            live_count([JobStatus.PENDING.value]).label("pending"),
            live_count(IN_FLIGHT_VALUES).label("in_flight"),
        ).where(bulks.c.id == bulk_id)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        if row is None:
            return None
        return to_bulk(row)

    def bulk_job_ids(self, bulk_id: str) -> list[str]:
        with self.engine.connect() as conn:
            query = sa.select(jobs.c.id).where(jobs.c.bulk_id == bulk_id).order_by(jobs.c.id)
            return [row.id for row in conn.execute(query)]

    def bulk_items(self, bulk_id: str) -> list[tuple[Job, Result | None]]:
        """Every job of a bulk (ordered by id) with its result once it is terminal.

        Jobs are read before results: a job read as terminal has its result stored already
        (both are written in one transaction).
        """
        with self.engine.connect() as conn:
            job_rows = conn.execute(
                sa.select(jobs).where(jobs.c.bulk_id == bulk_id).order_by(jobs.c.id)
            ).mappings()
            found = [to_job(row) for row in job_rows]
            ids = sa.select(jobs.c.id).where(jobs.c.bulk_id == bulk_id)
            result_rows = conn.execute(sa.select(results).where(results.c.job_id.in_(ids)))
            stored = {row["job_id"]: to_result(row) for row in result_rows.mappings()}
        return [(job, stored.get(job.id) if job.terminal else None) for job in found]

    @retrying
    def on_complete_sent(self, bulk_id: str) -> None:
        now = self.now()
        with self.engine.begin() as conn:
            conn.execute(
                bulks.update()
                .where(bulks.c.id == bulk_id)
                .values(on_complete_due_at=None, on_complete_sent_at=now)
            )
