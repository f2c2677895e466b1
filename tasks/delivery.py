"""Callback receipts: a callback counts as delivered when a worker starts it.

Publishing a callback is not delivering it: a broker that loses its data (Redis restarted
without persistence, a failover) loses the message too. So a worker that runs callbacks
records, from Celery's ``task_prerun`` signal, that it started the callback's message
(whose task id is ``flexpipe.flow.callback_id``) in SQL, and the sweeper sends again,
with the same task id, a callback sent ``FLEXPIPE_CALLBACK_RECEIPT_TIMEOUT`` s ago and
never received.

Only where flexpipe knows receipts are recorded: each worker of a connected app says, every
few seconds, which queues it consumes (``flexpipe_receivers``). A callback routed to a
queue no such worker consumes counts as delivered once published, as before.

flexpipe's own worker and any app given to ``flexpipe.tasks.register`` are connected;
another app that runs flexpipe's callbacks calls :func:`connect` where it is made.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

from celery import Celery, signals

log = logging.getLogger("flexpipe.delivery")

_apps: list[Celery] = []
_lock = threading.Lock()
_heartbeats: list[_Heartbeat] = []


def connect(celery_app: Celery) -> Celery:
    """Record receipts of flexpipe's callbacks run by ``celery_app``'s workers, and say
    which queues they consume (so the sweeper re-sends a lost callback only there).
    Safe to call more than once. Returns ``celery_app``."""
    with _lock:
        if not any(app is celery_app for app in _apps):
            _apps.append(celery_app)
    return celery_app


def connected(celery_app: Any) -> bool:
    """Whether ``celery_app`` records receipts (:func:`connect` was called for it)."""
    return any(app is celery_app for app in _apps)


def receiver_window(timeout: float) -> float:
    """How recently a queue's worker must have said it records receipts for the sweeper to
    re-send there: a few heartbeats (see :func:`heartbeat_interval`)."""
    return 4 * heartbeat_interval(timeout)


def heartbeat_interval(timeout: float) -> float:
    """Seconds between a receipt-recording worker's heartbeats: a quarter of the receipt
    timeout, between 0.5 s and 60 s."""
    return min(60.0, max(0.5, timeout / 4))


def is_callback_id(task_id: str | None) -> bool:
    """Callback ids are name-based UUIDs (version 5); Celery's own ids are random (4)."""
    if not task_id:
        return False
    try:
        return uuid.UUID(task_id).version == 5
    except ValueError:
        return False


@signals.task_prerun.connect
def _record_receipt(
    sender: Any = None, task_id: str | None = None, args: Any = None, **_: Any
) -> None:
    if sender is None or not connected(getattr(sender, "app", None)):
        return
    if not is_callback_id(task_id) or not args or not isinstance(args[0], str):
        return
    try:
        record(str(task_id), args[0])
    except Exception:  # the callback runs anyway; unrecorded, it may be sent again
        log.warning("callback %s: receipt not recorded", task_id, exc_info=True)


def record(task_id: str, owner_id: str) -> bool:
    """Record that message ``task_id`` (a job's or a bulk's callback) reached a worker;
    False when it is no callback flexpipe sent for the job's current attempt."""
    from flexpipe.flow import callback_id
    from flexpipe.tasks.runtime import runtime

    store = runtime().store
    if task_id == callback_id(owner_id):
        return store.on_complete_received(owner_id)
    attempt = store.job_attempt(owner_id)
    if attempt is None or task_id != callback_id(owner_id, attempt):
        return False
    return store.callback_received(owner_id, attempt)


class _Heartbeat(threading.Thread):
    """In a worker's main process: every few seconds, the queues it consumes now."""

    def __init__(self, consumer: Any) -> None:
        super().__init__(name="flexpipe-receipts", daemon=True)
        from flexpipe.config.settings import get_settings
        from flexpipe.store import Store, make_engine

        settings = get_settings()
        self.consumer = consumer
        self.interval = heartbeat_interval(settings.callback_receipt_timeout)
        # Its own engine, without a pool: nothing is shared with the forked pool children.
        self.store = Store(make_engine(settings.db_url, poolclass=_null_pool()))
        self.stopped = threading.Event()

    def queues(self) -> list[str]:
        task_consumer = getattr(self.consumer, "task_consumer", None)
        return [queue.name for queue in getattr(task_consumer, "queues", None) or []]

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.store.receiver_seen(self.queues())
            except Exception:  # the database may be away: the next beat says it again
                log.debug("receipt heartbeat not recorded", exc_info=True)
            self.stopped.wait(self.interval)
        self.store.dispose()


def _null_pool() -> Any:
    from sqlalchemy.pool import NullPool

    return NullPool


@signals.worker_ready.connect
def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    if sender is None or not connected(getattr(sender, "app", None)):
        return
    from flexpipe.config.settings import get_settings

    if not get_settings().callback_receipt_timeout:
        return
    heartbeat = _Heartbeat(sender)
    _heartbeats.append(heartbeat)
    heartbeat.start()


@signals.worker_shutdown.connect
def _stop_heartbeat(**_: Any) -> None:
    while _heartbeats:
        _heartbeats.pop().stopped.set()
