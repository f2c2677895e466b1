"""Signed webhook events: the Standard Webhooks signer and the sender that delivers them.

An event is ``{"id": "evt_…", "object": "event", "type": …, "created_at": int, "data": {"id":
…}}``, POSTed with ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature: v1,<base64
HMAC-SHA256 of "{id}.{timestamp}.{body}">``, the key being the base64 part of a ``whsec_``
secret (the scheme the ``openai`` SDK's ``client.webhooks.unwrap()`` verifies). The sender is
not tied to responses: ``emit("batch.completed", batch_id)`` works the same way.

Delivery never blocks the caller: :meth:`WebhookSender.emit` only queues. One worker task per
URL sends first attempts in order, one at a time; a failed attempt (non-2xx, connection error
or timeout) is retried beside the queue after ``webhook_retry_delay_s`` (doubling up to
``webhook_retry_max_delay_s``, both scaled by ``time_scale``) until ``webhook_max_attempts``.
The ``webhook_*`` fault knobs drop, duplicate, delay, reorder or badly sign events.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from flexpipe.emulator.config import EmulatorConfig, secret_key
from flexpipe.emulator.faults import Faults

log = logging.getLogger("flexpipe.emulator")

#: Event types of a response that reached each terminal status.
RESPONSE_EVENTS = {
    "completed": "response.completed",
    "failed": "response.failed",
    "cancelled": "response.cancelled",
    "incomplete": "response.incomplete",
}

#: Counters reported under ``webhooks`` by ``/_emulator/stats``.
COUNTERS = (
    "events",
    "sent",
    "failed_attempts",
    "gave_up",
    "dropped",
    "duplicated",
    "delayed",
    "reordered",
    "bad_signature",
)

_WRONG_KEY = b"flexpipe-emulator: not the webhook secret"


def new_secret() -> str:
    """A fresh ``whsec_`` secret (24 random bytes)."""
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


def signature(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one delivery."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def event(type_: str, object_id: str, created_at: float | None = None) -> dict[str, Any]:
    """An event object of ``type_`` about ``object_id`` (a response or batch id)."""
    return {
        "id": "evt_" + os.urandom(16).hex(),
        "object": "event",
        "type": type_,
        "created_at": int(created_at if created_at is not None else time.time()),
        "data": {"id": object_id},
    }


@dataclass
class Delivery:
    """One event on its way to one URL (the same ``webhook-id`` on every attempt)."""

    url: str
    body: bytes
    webhook_id: str
    bad_signature: bool = False
    attempts: int = 0


class WebhookSender:
    """Queues, signs, sends and retries webhook events on the emulator's event loop."""

    def __init__(self, config: EmulatorConfig, faults: Faults) -> None:
        self.config = config
        self.faults = faults
        self.urls: tuple[str, ...] = tuple(config.webhook_urls)
        self._key = secret_key(config.webhook_secret) if config.webhook_secret else None
        self.counts: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._queues: dict[str, asyncio.Queue[Delivery]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._held: list[Delivery] = []
        self._held_timer: asyncio.TimerHandle | None = None
        self._session: aiohttp.ClientSession | None = None
        self._retrying = 0
        self._closed = False

    # -- configuration ------------------------------------------------------------------

    def configure(self, urls: Sequence[str] | None = None, secret: str | None = None) -> None:
        """Replace the receiver URLs and/or the secret (``POST /_emulator/webhooks``)."""
        key = secret_key(secret) if secret is not None else self._key
        new_urls = tuple(urls) if urls is not None else self.urls
        for url in new_urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"webhook url must be http(s): {url!r}")
        if new_urls and key is None:
            raise ValueError("webhook urls need a secret (whsec_...)")
        self._key = key
        self.urls = new_urls

    @property
    def secret_set(self) -> bool:
        return self._key is not None

    # -- sending ------------------------------------------------------------------------

    def emit(self, type_: str, object_id: str, created_at: float | None = None) -> None:
        """Queue ``type_`` about ``object_id`` for every URL; returns at once (on the loop)."""
        if not self.urls or self._key is None or self._closed:
            return
        self.counts["events"] += 1
        faults = self.faults
        if faults.roll("webhook_drop_rate"):
            self.counts["dropped"] += 1
            return
        body = json.dumps(event(type_, object_id, created_at), separators=(",", ":")).encode()
        webhook_id = "wh_" + os.urandom(16).hex()
        bad = faults.roll("webhook_bad_signature_rate")
        if bad:
            self.counts["bad_signature"] += 1
        copies = 1
        if faults.roll("webhook_duplicate_rate"):
            self.counts["duplicated"] += 1
            copies = 2
        deliveries = [
            Delivery(url, body, webhook_id, bad) for url in self.urls for _ in range(copies)
        ]
        if faults.roll("webhook_delay_rate"):
            self.counts["delayed"] += 1
            self._spawn(self._enqueue_later(deliveries, self._delay_s()))
            return
        if not self._held and faults.roll("webhook_reorder_rate"):
            self.counts["reordered"] += 1
            self._held = deliveries
            loop = asyncio.get_running_loop()
            self._held_timer = loop.call_later(self._delay_s(), self._release_held)
            return
        self._enqueue(deliveries)
        self._release_held()

    def _delay_s(self) -> float:
        return self.faults.config.webhook_delay_ms / 1000.0

    def _release_held(self) -> None:
        if self._held_timer is not None:
            self._held_timer.cancel()
            self._held_timer = None
        held, self._held = self._held, []
        self._enqueue(held)

    def _enqueue(self, deliveries: list[Delivery]) -> None:
        if self._closed:
            return
        for d in deliveries:
            queue = self._queues.get(d.url)
            if queue is None:
                queue = self._queues[d.url] = asyncio.Queue()
                self._spawn(self._worker(queue))
            queue.put_nowait(d)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _enqueue_later(self, deliveries: list[Delivery], delay: float) -> None:
        await asyncio.sleep(delay)
        self._enqueue(deliveries)

    async def _worker(self, queue: asyncio.Queue[Delivery]) -> None:
        while True:
            d = await queue.get()
            await self._attempt(d)

    async def _retry_later(self, d: Delivery, delay: float) -> None:
        self._retrying += 1
        try:
            await asyncio.sleep(delay)
        finally:
            self._retrying -= 1
        await self._attempt(d)

    async def _attempt(self, d: Delivery) -> None:
        d.attempts += 1
        ok = False
        try:
            ok = await self._post(d)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.info("webhook delivery to %s failed: %s", d.url, type(exc).__name__)
        if ok:
            self.counts["sent"] += 1
            return
        self.counts["failed_attempts"] += 1
        cfg = self.config
        if d.attempts >= cfg.webhook_max_attempts:
            self.counts["gave_up"] += 1
            return
        delay = min(
            cfg.webhook_retry_delay_s * 2 ** (d.attempts - 1), cfg.webhook_retry_max_delay_s
        )
        self._spawn(self._retry_later(d, cfg.scaled(delay)))

    async def _post(self, d: Delivery) -> bool:
        assert self._key is not None
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self.config.webhook_timeout_s)
            self._session = aiohttp.ClientSession(timeout=timeout)
        timestamp = int(time.time())
        key = _WRONG_KEY if d.bad_signature else self._key
        headers = {
            "content-type": "application/json",
            "user-agent": "flexpipe-emulator-webhooks",
            "webhook-id": d.webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature(key, d.webhook_id, timestamp, d.body),
        }
        async with self._session.post(d.url, data=d.body, headers=headers) as resp:
            await resp.read()
            return 200 <= resp.status < 300

    # -- lifecycle ----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        pending = sum(q.qsize() for q in self._queues.values()) + len(self._held)
        return {
            **self.counts,
            "pending": pending,
            "retrying": self._retrying,
            "urls": list(self.urls),
        }

    def cancel_all(self) -> None:
        """Forget queued, held and retrying deliveries, and zero the counters (a reset)."""
        if self._held_timer is not None:
            self._held_timer.cancel()
            self._held_timer = None
        self._held = []
        for task in list(self._tasks):
            task.cancel()
        self._queues.clear()
        self.counts = dict.fromkeys(COUNTERS, 0)

    async def close(self) -> None:
        """Stop sending: cancel every delivery task and close the HTTP session."""
        self._closed = True
        tasks = list(self._tasks)
        self.cancel_all()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._session is not None:
            await self._session.close()
            self._session = None
