"""The sweeper's queries: claims of due polls, submits and callbacks, and overdue jobs.

Two sweepers (two beats, a beat restarted while its last sweep still runs) never take the
same row in the same period. Every claim is a guarded ``UPDATE ... RETURNING`` that
repeats the "still due" condition, so of two claims that read the same rows only the
first to write gets them, and the other gets back what it actually changed: nothing.
On PostgreSQL the read also skips rows another sweeper holds (``FOR UPDATE SKIP
LOCKED``), so the second sweeper takes other due rows instead of waiting; on SQLite the
single writer orders the updates and each re-reads the guard at its write.

Each query reads one partial index of live rows (flexpipe.schema), so a sweep costs the
same with ten thousand finished jobs or ten million.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from flexpipe.models import Job
from flexpipe.schema import bulks, jobs
from flexpipe.store.engine import Database
from flexpipe.store.rows import aware, to_job
from flexpipe.store.statements import IN_FLIGHT_STATUS as IN_FLIGHT
from flexpipe.store.statements import LIVE_STATUS, PENDING_STATUS


class Sweeps(Database):
    """Claims of work that is due: each marks what it took so it is taken once per period."""

    def take_due_submits(self, *, horizon: float, limit: int) -> list[tuple[str, float]]:
        """Claim parked pending jobs due within ``horizon`` s: ``(job_id, delay)`` each."""
        now = self.now()
        query = (
            sa.select(jobs.c.id, jobs.c.next_poll_at)
            .where(
                PENDING_STATUS,
                jobs.c.parked.is_(True),
                jobs.c.next_poll_at <= now + timedelta(seconds=horizon),
            )
            .order_by(jobs.c.next_poll_at)
            .limit(limit)
        )
        if self._postgres:
            query = query.with_for_update(skip_locked=True)
        with self.engine.begin() as conn:
            rows = conn.execute(query).all()
            if not rows:
                return []
            taken = claimed(
                conn,
                jobs.update()
                .where(
                    jobs.c.id.in_([r.id for r in rows]),
                    PENDING_STATUS,
                    jobs.c.parked.is_(True),
                )
                .values(parked=False, dispatched_at=now, updated_at=now),
            )
        return [
            (r.id, max(0.0, (aware(r.next_poll_at) - now).total_seconds()))
            for r in rows
            if r.id in taken
        ]

    def take_due_bulk_callbacks(
        self, *, overdue_after: float, limit: int
    ) -> list[tuple[str, dict[str, Any]]]:
        """Finished bulks whose completion callback should have been sent by now."""
        now = self.now()
        before = now - timedelta(seconds=overdue_after)
        query = (
            sa.select(bulks.c.id, bulks.c.on_complete)
            .where(bulks.c.on_complete_due_at <= before)
            .order_by(bulks.c.on_complete_due_at)
            .limit(limit)
        )
        if self._postgres:
            query = query.with_for_update(skip_locked=True)
        with self.engine.begin() as conn:
            rows = [(row.id, row.on_complete) for row in conn.execute(query)]
            if not rows:
                return []
            taken = claimed(
                conn,
                bulks.update()
                .where(bulks.c.id.in_([r[0] for r in rows]), bulks.c.on_complete_due_at <= before)
                .values(on_complete_due_at=now),
                bulks.c.id,
            )
        return [r for r in rows if r[0] in taken]

    def take_due_polls(
        self, *, overdue_after: float, horizon: float = 0.0, limit: int
    ) -> list[tuple[str, int, float]]:
        """Claim polls to send: parked ones due within ``horizon`` s, and lost chains.

        Returns ``(job_id, seq, delay)``: send poll ``seq`` in ``delay`` s (0 for a chain
        presumed lost, i.e. a poll ``overdue_after`` s late). The fencing number is *not*
        bumped: if the "lost" message is only late (a backed-up queue), whichever of the two
        runs first polls and moves the chain on, and the other finds itself stale and stops
        without a read. (Bumping here made every late message stale, and under a backlog
        longer than ``overdue_after`` each revival was itself revived: a livelock.) A lost
        chain's ``next_poll_at`` moves to now, so it is revived at most once per period.
        """
        now = self.now()
        lost_before = now - timedelta(seconds=overdue_after)
        due = sa.or_(
            sa.and_(
                jobs.c.parked.is_(True),
                jobs.c.next_poll_at <= now + timedelta(seconds=horizon),
            ),
            jobs.c.next_poll_at <= lost_before,
        )
        query = (
            sa.select(jobs.c.id, jobs.c.parked, jobs.c.next_poll_at, jobs.c.poll_seq)
            .where(IN_FLIGHT, due)
            .order_by(jobs.c.next_poll_at)
            .limit(limit)
        )
        if self._postgres:
            query = query.with_for_update(skip_locked=True)
        with self.engine.begin() as conn:
            rows = conn.execute(query).all()
            if not rows:
                return []
            parked = [r.id for r in rows if r.parked]
            lost = [r.id for r in rows if not r.parked]
            taken: set[str] = set()
            if parked:
                # Sent now with a countdown; the chain is live from here on.
                taken |= claimed(
                    conn,
                    jobs.update()
                    .where(jobs.c.id.in_(parked), jobs.c.parked.is_(True), IN_FLIGHT)
                    .values(parked=False, updated_at=now),
                )
            if lost:
                taken |= claimed(
                    conn,
                    jobs.update()
                    .where(jobs.c.id.in_(lost), jobs.c.next_poll_at <= lost_before, IN_FLIGHT)
                    .values(next_poll_at=now, updated_at=now),
                )
        return [
            (
                r.id,
                int(r.poll_seq),
                max(0.0, (aware(r.next_poll_at) - now).total_seconds()) if r.parked else 0.0,
            )
            for r in rows
            if r.id in taken
        ]

    def take_stale_pending(self, *, stale_after: float, limit: int) -> list[str]:
        """Pending jobs whose submit message was sent ``stale_after`` s ago and never ran."""
        now = self.now()
        before = now - timedelta(seconds=stale_after)
        query = (
            sa.select(jobs.c.id)
            .where(
                PENDING_STATUS,
                jobs.c.parked.is_(False),
                jobs.c.dispatched_at <= before,
                sa.or_(jobs.c.lease_until.is_(None), jobs.c.lease_until < now),
            )
            .order_by(jobs.c.dispatched_at)
            .limit(limit)
        )
        if self._postgres:
            query = query.with_for_update(skip_locked=True)
        with self.engine.begin() as conn:
            ids = [row.id for row in conn.execute(query)]
            if not ids:
                return []
            taken = claimed(
                conn,
                jobs.update()
                .where(
                    jobs.c.id.in_(ids),
                    PENDING_STATUS,
                    jobs.c.parked.is_(False),
                    jobs.c.dispatched_at <= before,
                    sa.or_(jobs.c.lease_until.is_(None), jobs.c.lease_until < now),
                )
                .values(dispatched_at=now),
            )
        return [job_id for job_id in ids if job_id in taken]

    def past_deadline(self, *, limit: int) -> list[Job]:
        now = self.now()
        query = (
            sa.select(jobs)
            .where(LIVE_STATUS, jobs.c.deadline_at <= now)
            .order_by(jobs.c.deadline_at)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [to_job(row) for row in conn.execute(query).mappings()]

    def take_due_callbacks(
        self, *, overdue_after: float, limit: int
    ) -> list[tuple[str, dict[str, Any], int]]:
        """Terminal jobs whose callback should have been sent ``overdue_after`` s ago:
        ``(job id, callback, attempt)``."""
        now = self.now()
        before = now - timedelta(seconds=overdue_after)
        query = (
            sa.select(jobs.c.id, jobs.c.callback, jobs.c.attempt)
            .where(jobs.c.callback_due_at <= before)
            .order_by(jobs.c.callback_due_at)
            .limit(limit)
        )
        if self._postgres:
            query = query.with_for_update(skip_locked=True)
        with self.engine.begin() as conn:
            rows = [(row.id, row.callback, row.attempt) for row in conn.execute(query)]
            if not rows:
                return []
            taken = claimed(
                conn,
                jobs.update()
                .where(jobs.c.id.in_([r[0] for r in rows]), jobs.c.callback_due_at <= before)
                .values(callback_due_at=now),
            )
        return [r for r in rows if r[0] in taken]


def claimed(
    conn: sa.Connection, update: sa.Update, key: sa.ColumnElement[str] = jobs.c.id
) -> set[str]:
    """Run a guarded claim and return the ids it changed (only those are this sweeper's)."""
    return {row[0] for row in conn.execute(update.returning(key))}
