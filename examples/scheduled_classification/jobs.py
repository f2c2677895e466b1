"""The scheduled job and its completion callback.

flexpipe's beat runs :func:`classify_new_tickets` every ``FLEXPIPE_CLASSIFY_SCHEDULE``
seconds (``FLEXPIPE_CLASSIFY_JOB=examples.scheduled_classification.jobs.classify_new_tickets``);
a worker that imports this module (``FLEXPIPE_IMPORTS=examples.scheduled_classification.jobs``)
runs :func:`write_labels` once the bulk job ended.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from celery import shared_task

from examples.scheduled_classification.tickets import LABELS, WAITING, engine, runs, tickets
from flexpipe.tasks.bulk import classify, results

#: Tickets per run; the rest wait for the next one.
BATCH = 500
INSTRUCTIONS = "You triage the support tickets of a software company."
ON_COMPLETE = f"{__name__}.write_labels"


def classify_new_tickets() -> str | None:
    """Send the waiting tickets (up to ``BATCH``) as one bulk job; return its id.

    The claim and the bulk id are written in one transaction around the enqueue: a run
    that overlaps this one skips the claimed rows (row locks on PostgreSQL, the write
    lock on SQLite), and if anything fails before the commit the tickets wait for the
    next run. If the process dies after the enqueue but before the commit, the next run
    sends those tickets again (at least once; the labels come out the same).
    """
    claim = "claiming"
    with engine().begin() as conn:
        picked = sa.select(tickets.c.id).where(WAITING).order_by(tickets.c.id).limit(BATCH)
        claimed = conn.execute(
            sa.update(tickets)
            .where(tickets.c.id.in_(picked.scalar_subquery()), WAITING)
            .values(bulk_id=claim)
            .returning(tickets.c.id, tickets.c.body)
        ).all()
        if not claimed:
            return None
        bulk_id = classify(
            [{"input": row.body, "metadata": {"ticket": str(row.id)}} for row in claimed],
            LABELS,
            INSTRUCTIONS,
            name="tickets",
            on_complete=ON_COMPLETE,
        )
        conn.execute(
            sa.update(tickets)
            .where(tickets.c.id.in_([row.id for row in claimed]))
            .values(bulk_id=bulk_id)
        )
    return bulk_id


@shared_task(name=ON_COMPLETE)
def write_labels(bulk_id: str) -> str:
    """Write each ticket's label (or why it has none) back. Safe to run twice."""
    items = results(bulk_id)
    labelled = [
        {"ticket": int(item.metadata["ticket"]), "new_label": item.label}
        for item in items
        if item.label is not None
    ]
    failed = [
        {"ticket": int(item.metadata["ticket"]), "why": item.error or item.status.value}
        for item in items
        if item.label is None
    ]
    # Only tickets still owned by this bulk: a later run may have sent them again.
    mine = sa.and_(tickets.c.id == sa.bindparam("ticket"), tickets.c.bulk_id == bulk_id)
    with engine().begin() as conn:
        if labelled:
            conn.execute(
                sa.update(tickets).where(mine).values(label=sa.bindparam("new_label"), error=None),
                labelled,
            )
        if failed:
            conn.execute(sa.update(tickets).where(mine).values(error=sa.bindparam("why")), failed)
        conn.execute(
            runs.insert().values(
                bulk_id=bulk_id,
                labelled=len(labelled),
                failed=len(failed),
                finished_at=datetime.now(UTC),
            )
        )
    return f"{len(labelled)} labelled, {len(failed)} failed"
