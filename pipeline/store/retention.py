"""Retention: delete finished jobs older than a cutoff, in short batches, while workers run.

A job goes only once nothing can still need it: it is terminal, finished before the
cutoff, its callback is not due, and its bulk (if any) is finished, before the cutoff too,
with no completion callback due. Each batch is one transaction that deletes the results,
attempts and jobs of up to ``limit`` jobs; bulks go once their last job is gone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from flexpipe.schema import attempts, bulks, jobs, results
from flexpipe.store.engine import Database, retrying
from flexpipe.store.statements import TERMINAL_VALUES


@dataclass(frozen=True, slots=True)
class Pruned:
    """What one batch (or a whole prune) deleted."""

    jobs: int = 0
    bulks: int = 0

    def __add__(self, other: Pruned) -> Pruned:
        return Pruned(self.jobs + other.jobs, self.bulks + other.bulks)


def _prunable_jobs(cutoff: datetime) -> sa.ColumnElement[bool]:
    """Jobs nothing can still need (read through ``(status, finished_at)``)."""
    kept_bulk = (
        sa.select(sa.literal(1))
        .where(
            bulks.c.id == jobs.c.bulk_id,
            sa.or_(
                bulks.c.finished_at.is_(None),
                bulks.c.finished_at >= cutoff,
                bulks.c.on_complete_due_at.is_not(None),
            ),
        )
        .exists()
    )
    return sa.and_(
        jobs.c.status.in_(TERMINAL_VALUES),
        jobs.c.finished_at < cutoff,
        jobs.c.callback_due_at.is_(None),
        sa.or_(jobs.c.bulk_id.is_(None), ~kept_bulk),
    )


class Retention(Database):
    """Deletes of finished history."""

    @retrying
    def prune_jobs(self, cutoff: datetime, *, limit: int) -> int:
        """Delete up to ``limit`` prunable jobs with their results and attempts; how many.

        On PostgreSQL the jobs are locked first (``FOR UPDATE SKIP LOCKED``): a concurrent
        ``flexpipe retry`` of one of them waits for this batch, or is skipped by it. The
        delete of the jobs checks the conditions again.
        """
        query = sa.select(jobs.c.id).where(_prunable_jobs(cutoff)).limit(limit)
        if self._postgres:
            query = query.with_for_update(of=jobs, skip_locked=True)
        with self.engine.begin() as conn:
            ids = list(conn.execute(query).scalars())
            if not ids:
                return 0
            conn.execute(results.delete().where(results.c.job_id.in_(ids)))
            conn.execute(attempts.delete().where(attempts.c.job_id.in_(ids)))
            deleted = conn.execute(
                jobs.delete().where(jobs.c.id.in_(ids), _prunable_jobs(cutoff))
            ).rowcount
        return int(deleted)

    @retrying
    def prune_bulks(self, cutoff: datetime, *, limit: int) -> int:
        """Delete up to ``limit`` finished bulks whose jobs are all gone; how many."""
        has_jobs = sa.select(sa.literal(1)).where(jobs.c.bulk_id == bulks.c.id).exists()
        done = sa.and_(
            bulks.c.finished_at < cutoff, bulks.c.on_complete_due_at.is_(None), ~has_jobs
        )
        with self.engine.begin() as conn:
            ids = list(conn.execute(sa.select(bulks.c.id).where(done).limit(limit)).scalars())
            if not ids:
                return 0
            deleted = conn.execute(bulks.delete().where(bulks.c.id.in_(ids), done)).rowcount
        return int(deleted)
