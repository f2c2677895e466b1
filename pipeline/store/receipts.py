"""Callback receipts: which callbacks a worker received, and which queues' workers say so.

A callback counts as delivered once a worker that records receipts started it (see
``flexpipe.tasks.delivery``), not once it was published: a message lost with the broker's
data is then found here, sent but never received, and sent again by the sweeper.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from flexpipe.errors import ConstraintViolated
from flexpipe.schema import bulks, jobs, receivers
from flexpipe.states import TERMINAL
from flexpipe.store.engine import Database
from flexpipe.store.sweeps import claimed

_TERMINAL_VALUES = [s.value for s in TERMINAL]


class Receipts(Database):
    """Receipts of callbacks, and the heartbeats of the workers that record them."""

    def job_attempt(self, job_id: str) -> int | None:
        """The job's current attempt (None: no such job)."""
        with self.engine.connect() as conn:
            attempt = conn.execute(
                sa.select(jobs.c.attempt).where(jobs.c.id == job_id)
            ).scalar_one_or_none()
        return None if attempt is None else int(attempt)

    def callback_received(self, job_id: str, attempt: int) -> bool:
        """Record that attempt ``attempt``'s callback reached a worker; False if it was
        recorded before (a redelivery) or the job has moved on to another attempt."""
        now = self.now()
        with self.engine.begin() as conn:
            changed = conn.execute(
                jobs.update()
                .where(
                    jobs.c.id == job_id,
                    jobs.c.attempt == attempt,
                    jobs.c.callback_received_at.is_(None),
                )
                .values(callback_received_at=now)
            ).rowcount
        return bool(changed)

    def on_complete_received(self, bulk_id: str) -> bool:
        """Record that a bulk's completion callback reached a worker (False: seen before)."""
        now = self.now()
        with self.engine.begin() as conn:
            changed = conn.execute(
                bulks.update()
                .where(bulks.c.id == bulk_id, bulks.c.on_complete_received_at.is_(None))
                .values(on_complete_received_at=now)
            ).rowcount
        return bool(changed)

    def receiver_seen(self, queues: Iterable[str]) -> None:
        """A worker that records receipts consumes ``queues`` now."""
        now = self.now()
        for queue in sorted(set(queues)):
            with self.engine.begin() as conn:
                updated = conn.execute(
                    receivers.update().where(receivers.c.queue == queue).values(seen_at=now)
                ).rowcount
                if updated:
                    continue
            try:
                with self.engine.begin() as conn:
                    conn.execute(receivers.insert().values(queue=queue, seen_at=now))
            except ConstraintViolated:
                pass  # another worker inserted it at the same moment: it is seen

    def live_receivers(self, *, within: float) -> set[str]:
        """Queues a receipt-recording worker consumed in the last ``within`` seconds."""
        since = self.now() - timedelta(seconds=within)
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(receivers.c.queue).where(receivers.c.seen_at >= since))
            return {row.queue for row in rows}

    def take_unreceived_callbacks(
        self, *, timeout: float, accept: Callable[[dict[str, Any]], bool], limit: int
    ) -> list[tuple[str, dict[str, Any], int]]:
        """Claim job callbacks sent ``timeout`` s ago and never received, for which
        ``accept(callback)`` holds (its queue records receipts): ``(job id, callback,
        attempt)``. A claim moves ``callback_sent_at`` to now, so each is re-sent at most
        once per ``timeout``, by one sweeper."""
        now = self.now()
        before = now - timedelta(seconds=timeout)
        unreceived = sa.and_(
            jobs.c.callback_received_at.is_(None),
            jobs.c.callback_sent_at <= before,
            jobs.c.callback_due_at.is_(None),
            jobs.c.status.in_(_TERMINAL_VALUES),
        )
        query = (
            sa.select(jobs.c.id, jobs.c.callback, jobs.c.attempt)
            .where(unreceived)
            .order_by(jobs.c.callback_sent_at)
            .limit(limit)
        )
        if self._postgres:
            query = query.with_for_update(skip_locked=True)
        with self.engine.begin() as conn:
            rows = [
                (row.id, row.callback, int(row.attempt))
                for row in conn.execute(query)
                if row.callback and accept(row.callback)
            ]
            if not rows:
                return []
            taken = claimed(
                conn,
                jobs.update()
                .where(jobs.c.id.in_([r[0] for r in rows]), unreceived)
                .values(callback_sent_at=now),
            )
        return [r for r in rows if r[0] in taken]

    def take_unreceived_bulk_callbacks(
        self, *, timeout: float, accept: Callable[[dict[str, Any]], bool], limit: int
    ) -> list[tuple[str, dict[str, Any]]]:
        """Like :meth:`take_unreceived_callbacks`, for bulks' completion callbacks."""
        now = self.now()
        before = now - timedelta(seconds=timeout)
        unreceived = sa.and_(
            bulks.c.on_complete_received_at.is_(None),
            bulks.c.on_complete_sent_at <= before,
            bulks.c.on_complete_due_at.is_(None),
        )
        query = sa.select(bulks.c.id, bulks.c.on_complete).where(unreceived).limit(limit)
        if self._postgres:
            query = query.with_for_update(skip_locked=True)
        with self.engine.begin() as conn:
            rows = [
                (row.id, row.on_complete)
                for row in conn.execute(query)
                if row.on_complete and accept(row.on_complete)
            ]
            if not rows:
                return []
            taken = claimed(
                conn,
                bulks.update()
                .where(bulks.c.id.in_([r[0] for r in rows]), unreceived)
                .values(on_complete_sent_at=now),
                bulks.c.id,
            )
        return [r for r in rows if r[0] in taken]
