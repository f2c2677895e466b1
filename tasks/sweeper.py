"""The sweeper, run by beat: SQL is the source of truth, so lost work is found by query.

Each run sends polls that are due from SQL (parked waits, chains lost to a Redis restart
or a killed worker), re-sends submits that never ran, expires jobs past their deadline,
and re-sends callbacks that were due but not sent. With webhooks on, it also hands events
that came before their job's response id was recorded to that job (a poll now), and now
and then forgets deliveries older than the dedupe window.
"""

from __future__ import annotations

import logging
import os
import socket
from collections import defaultdict
from typing import Any

from flexpipe.config import redis_memory
from flexpipe.config.celery import app
from flexpipe.tasks import delivery
from flexpipe.tasks.runtime import runtime
from flexpipe.tasks.steps import (
    ACKS,
    callback_queue,
    follow,
    poll_many,
    send_bulk_callback,
    send_callback,
    submit,
)

log = logging.getLogger("flexpipe.sweeper")
BATCH = 2000
#: Due polls within this many seconds of each other share a message, up to GROUP_SIZE.
GROUP_WINDOW = 0.25
GROUP_SIZE = 25
#: Old webhook ids are pruned once every this many sweeps.
PRUNE_EVERY = 100
_sweeps = 0


#: No task events: a sweep every few seconds would bury Flower's history of the jobs'
#: tasks (``flexpipe top`` shows the last sweep instead). To see them again, set
#: ``task_annotations={"flexpipe.sweep": {"send_events": True}}`` on the Celery app.
@app.task(name="flexpipe.sweep", send_events=False, **ACKS)
def sweep() -> dict[str, int]:
    """One sweep; returns counts of what it did."""
    global _sweeps
    rt = runtime()
    settings, store, flow = rt.settings, rt.store, rt.flow
    counts = dict.fromkeys(
        [
            "polls", "submits", "expired", "escalated", "callbacks", "bulk_callbacks",
            "webhooks", "unreceived",
        ],
        0,
    )

    if settings.webhooks:
        matched = store.match_webhooks(window=settings.webhook_match_window, limit=BATCH)
        for start in range(0, len(matched), GROUP_SIZE):
            poll_many.apply_async(([[j, s] for j, s in matched[start : start + GROUP_SIZE]],))
        counts["webhooks"] = len(matched)
        _sweeps += 1
        if _sweeps % PRUNE_EVERY == 0:
            store.prune_webhooks(older_than=settings.webhook_retention)

    due = store.take_due_polls(
        overdue_after=settings.poll_overdue_after, horizon=settings.sweep_interval, limit=BATCH
    )
    # Polls due at about the same time travel together: one message per group, not per job.
    groups: dict[float, list[list[Any]]] = defaultdict(list)
    for job_id, seq, delay in due:
        groups[round(delay / GROUP_WINDOW) * GROUP_WINDOW].append([job_id, seq])
    for delay, polls in sorted(groups.items()):
        for start in range(0, len(polls), GROUP_SIZE):
            poll_many.apply_async((polls[start : start + GROUP_SIZE],), countdown=delay)
    counts["polls"] = len(due)

    for job_id, delay in store.take_due_submits(horizon=settings.sweep_interval, limit=BATCH):
        submit.apply_async((job_id, 0), countdown=delay)
        counts["submits"] += 1

    for job_id in store.take_stale_pending(stale_after=settings.submit_stale_after, limit=BATCH):
        submit.apply_async((job_id, 0))
        counts["submits"] += 1

    for job in store.past_deadline(limit=BATCH):
        step = flow.expire(job.id)
        if step.kind == "done":
            counts["expired"] += 1
        elif step.kind == "submit":  # escalated: its new attempt must be sent
            counts["escalated"] += 1
        follow(job.id, step)

    for job_id, callback, attempt in store.take_due_callbacks(
        overdue_after=settings.callback_overdue_after, limit=BATCH
    ):
        send_callback(job_id, callback, attempt)
        counts["callbacks"] += 1

    for bulk_id, callback in store.take_due_bulk_callbacks(
        overdue_after=settings.callback_overdue_after, limit=BATCH
    ):
        send_bulk_callback(bulk_id, callback)
        counts["bulk_callbacks"] += 1

    counts["unreceived"] = resend_unreceived(settings.callback_receipt_timeout)

    if settings.broker_url.startswith(redis_memory.REDIS_SCHEMES):
        redis_memory.warn_if_full(settings.broker_url, settings.redis_memory_warn)

    store.beat("sweeper", socket.gethostname(), os.getpid())  # for flexpipe doctor
    if any(counts.values()):
        log.info("sweep: %s", counts)
    return counts


def resend_unreceived(timeout: float) -> int:
    """Send again, as the same messages, callbacks sent ``timeout`` s ago that no worker
    received (lost with the broker's data, or reserved by a worker that was killed).
    Only callbacks whose queue a receipt-recording worker consumes: elsewhere a receipt
    would never come. Returns how many were sent."""
    if not timeout:
        return 0
    store = runtime().store
    live = store.live_receivers(within=max(timeout, delivery.receiver_window(timeout)))
    if not live:
        return 0

    def accept(callback: dict[str, Any]) -> bool:
        return callback_queue(callback) in live

    sent = 0
    for job_id, callback, attempt in store.take_unreceived_callbacks(
        timeout=timeout, accept=accept, limit=BATCH
    ):
        send_callback(job_id, callback, attempt)
        sent += 1
    for bulk_id, callback in store.take_unreceived_bulk_callbacks(
        timeout=timeout, accept=accept, limit=BATCH
    ):
        send_bulk_callback(bulk_id, callback)
        sent += 1
    if sent:
        log.warning("sweep: %d callback(s) sent again: never received by a worker", sent)
    return sent
