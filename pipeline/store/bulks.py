"""Bulk jobs: one row of counters per bulk, kept in step with its items' outcomes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from itertools import islice
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
        new_jobs: Iterable[NewJob],
        *,
        name: str | None,
        on_complete: dict[str, Any] | None,
        chunk: int = 1000,
    ) -> tuple[str, list[tuple[str, bool]]]:
        """Insert a bulk job and its items (in chunks of ``chunk`` rows); return the ids.

        ``new_jobs`` is read as a stream, ``chunk`` at a time, inside one transaction: a
        file of any length costs the memory of one chunk, and an error raised by the
        iterable (a bad row at line 150,000) rolls everything back. Items whose
        idempotency key already exists are not inserted again and do not count towards
        the bulk's total.
        """
        bulk_id = new_id()
        now = self.now()
        out: list[tuple[str, bool]] = []
        total = 0
        with self.engine.begin() as conn:
            conn.execute(
                bulks.insert().values(
                    id=bulk_id,
                    name=name,
                    total=0,
                    done=0,
                    completed=0,
                    failed=0,
                    incomplete=0,
                    cancelled=0,
                    expired=0,
                    on_complete=on_complete,
                    created_at=now,
                )
            )
            iterator = iter(new_jobs)
            while batch := [replace(job, bulk_id=bulk_id) for job in islice(iterator, chunk)]:
                rows, pairs = new_rows(conn, batch, now)
                if rows:
                    conn.execute(jobs.insert(), rows)
                out += pairs
                total += len(rows)
            # The total is known at the end; nobody sees the bulk before this commits.
            conn.execute(
                bulks.update()
                .where(bulks.c.id == bulk_id)
                .values(
                    total=total,
                    finished_at=now if not total else None,
                    on_complete_due_at=now if not total and on_complete else None,
                )
            )
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
