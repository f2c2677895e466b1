"""Webhook events: remember each delivery by its ``webhook-id``, and hand the job it names
a poll now by taking over its poll chain.

Taking over moves the job's fencing number on (``poll_seq + 1``) in the same transaction
that records the event, so the poll the caller then sends is the chain's only live one: a
poll message already waiting, or a poll in flight, finds its number stale and stops. An
event about a response id no job holds yet (the provider finished before the submit's
commit) waits unhandled; :meth:`Webhooks.claim_early_webhook` (right after the commit)
or :meth:`Webhooks.match_webhooks` (the sweeper) hands it to the job later.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from flexpipe.errors import ConstraintViolated
from flexpipe.models import WebhookEvent
from flexpipe.schema import jobs, webhook_events
from flexpipe.store.engine import Database, retrying
from flexpipe.store.statements import IN_FLIGHT_STATUS


@dataclass(frozen=True, slots=True)
class WebhookBatch:
    """What recording a batch of events did."""

    #: ``(job_id, poll_seq)``: send each job this poll now (its chain was taken over).
    polls: list[tuple[str, int]] = field(default_factory=list)
    #: Deliveries of events already recorded (by ``webhook-id``): nothing was done again.
    duplicates: int = 0
    #: Response ids no job holds (yet): the events wait for a job to claim them.
    unknown: list[str] = field(default_factory=list)


class Webhooks(Database):
    """Webhook deliveries: dedupe, and the take-over of the poll chain of the job named."""

    @retrying
    def record_webhooks(self, events: Sequence[WebhookEvent]) -> WebhookBatch:
        """Record new events (a known ``webhook-id`` is a duplicate) and take over the poll
        chain of each in-flight job they name, in one transaction."""
        try:
            return self._record_webhooks(events)
        except ConstraintViolated:
            # Another receiver recorded one of these ids meanwhile: it is a duplicate now.
            return self._record_webhooks(events)

    def _record_webhooks(self, events: Sequence[WebhookEvent]) -> WebhookBatch:
        now = self.now()
        fresh: dict[str, WebhookEvent] = {}
        for event in events:
            fresh.setdefault(event.webhook_id, event)
        with self.engine.begin() as conn:
            known = set(
                conn.execute(
                    sa.select(webhook_events.c.id).where(webhook_events.c.id.in_(list(fresh)))
                ).scalars()
            )
            new = [e for key, e in fresh.items() if key not in known]
            if not new:
                return WebhookBatch(duplicates=len(events))
            conn.execute(
                webhook_events.insert(),
                [
                    {
                        "id": e.webhook_id,
                        "event_id": e.event_id,
                        "type": e.type,
                        "object_id": e.object_id,
                        "received_at": now,
                    }
                    for e in new
                ],
            )
            polls, unknown = _hand_over(conn, [e.object_id for e in new], now)
        return WebhookBatch(polls, duplicates=len(events) - len(new), unknown=unknown)

    @retrying
    def claim_early_webhook(self, job_id: str, response_id: str) -> int | None:
        """Right after a submit recorded ``response_id``: if an event about it came first,
        take over the job's chain and return the poll number to send now (else None)."""
        now = self.now()
        with self.engine.begin() as conn:
            waiting = conn.execute(
                sa.select(webhook_events.c.id)
                .where(
                    webhook_events.c.object_id == response_id,
                    webhook_events.c.handled_at.is_(None),
                )
                .limit(1)
            ).first()
            if waiting is None:
                return None
            polls, _ = _hand_over(conn, [response_id], now)
        return polls[0][1] if polls else None

    @retrying
    def match_webhooks(self, *, window: float, limit: int) -> list[tuple[str, int]]:
        """The sweeper's pass: hand unhandled events received in the last ``window`` s to
        jobs that now hold their response id; ``(job_id, poll_seq)`` to send."""
        now = self.now()
        with self.engine.begin() as conn:
            ids = list(
                conn.execute(
                    sa.select(webhook_events.c.object_id)
                    .where(
                        webhook_events.c.handled_at.is_(None),
                        webhook_events.c.received_at >= now - timedelta(seconds=window),
                    )
                    .distinct()
                    .limit(limit)
                ).scalars()
            )
            if not ids:
                return []
            polls, _ = _hand_over(conn, ids, now)
        return polls

    @retrying
    def prune_webhooks(self, *, older_than: float) -> int:
        """Forget events received more than ``older_than`` s ago (past any redelivery)."""
        before = self.now() - timedelta(seconds=older_than)
        with self.engine.begin() as conn:
            return int(
                conn.execute(
                    webhook_events.delete().where(webhook_events.c.received_at < before)
                ).rowcount
            )

    def webhook_counts(self) -> dict[str, int]:
        """Events recorded: ``handled`` and ``waiting`` (no job claimed them yet)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(webhook_events.c.handled_at.is_(None), sa.func.count()).group_by(
                    webhook_events.c.handled_at.is_(None)
                )
            ).all()
        counts = {"handled": 0, "waiting": 0}
        for waiting, n in rows:
            counts["waiting" if waiting else "handled"] += int(n)
        return counts


def _hand_over(
    conn: sa.Connection, response_ids: list[str], now: datetime
) -> tuple[list[tuple[str, int]], list[str]]:
    """Take over the chains of in-flight jobs holding ``response_ids`` and mark their
    events handled; events about finished jobs are handled too (nothing to do). Returns
    ``(job_id, poll_seq)`` to send, and the response ids no job holds."""
    wanted = sorted(set(response_ids))
    taken = conn.execute(
        jobs.update()
        .where(jobs.c.response_id.in_(wanted), IN_FLIGHT_STATUS)
        .values(
            poll_seq=jobs.c.poll_seq + 1,
            next_poll_at=now,
            parked=False,
            updated_at=now,
        )
        .returning(jobs.c.id, jobs.c.poll_seq, jobs.c.response_id)
    ).all()
    owners: dict[str, Any] = {row.response_id: row.id for row in taken}
    rest = [r for r in wanted if r not in owners]
    if rest:
        for row in conn.execute(
            sa.select(jobs.c.id, jobs.c.response_id).where(jobs.c.response_id.in_(rest))
        ):
            owners[row.response_id] = row.id  # finished already: nothing to poll
    if owners:
        # One statement for the whole group: each event gets the job holding its id.
        owner = (
            sa.select(jobs.c.id)
            .where(jobs.c.response_id == webhook_events.c.object_id)
            .scalar_subquery()
        )
        conn.execute(
            webhook_events.update()
            .where(
                webhook_events.c.object_id.in_(list(owners)),
                webhook_events.c.handled_at.is_(None),
            )
            .values(job_id=owner, handled_at=now)
        )
    polls = [(row.id, int(row.poll_seq)) for row in taken]
    return polls, [r for r in wanted if r not in owners]
