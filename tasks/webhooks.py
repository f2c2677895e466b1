"""The webhook receiver: a provider's signed ``response.*`` event sends that job's poll now.

Each delivery is verified with the ``openai`` SDK (:class:`flexpipe.client.WebhookVerifier`):
a bad signature, a timestamp outside the tolerance or a body that is not an event gets 400
and nothing is recorded. A verified event is recorded by its ``webhook-id`` (a redelivery is
answered 200 and does nothing), and the job holding its response id gets its poll chain
taken over and a poll sent now: one GET, stored through the same fenced path as every
poll, so a webhook and a scheduled poll that race store once. An event about a response id
no job holds yet (the submit has not committed it) waits in SQL; the submit, or else the
sweeper, hands it over. Unknown ids are logged and answered 200, so the provider does not
retry them for days.

Deliveries are written in groups: one thread takes every verified event waiting, records
them in one transaction and sends their polls, then answers all their requests, so a
busy receiver commits once per group instead of once per event.

Mount it as :func:`wsgi_app` or :func:`asgi_app`, from Django (``flexpipe.contrib.django.urls``),
from Flask (``flexpipe.contrib.flask.webhook_blueprint``), or alone (``flexpipe webhooks``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from flexpipe.client import RESPONSE_EVENT_TYPES, WebhookVerifier
from flexpipe.config.settings import on_configure
from flexpipe.errors import InvalidWebhook
from flexpipe.models import WebhookEvent
from flexpipe.store import Store, WebhookBatch
from flexpipe.tasks.runtime import runtime

log = logging.getLogger("flexpipe.webhooks")

#: Largest body accepted (an event is a few hundred bytes).
MAX_BODY = 64 * 1024
#: Events recorded per transaction at most.
MAX_GROUP = 500
#: Polls per ``poll_many`` message when a group sends many.
POLLS_PER_MESSAGE = 25
#: How long a request waits for its group's commit before answering 503 (seconds).
COMMIT_WAIT = 10.0


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer: status code and a small JSON body."""

    status: int
    body: dict[str, Any]

    def encoded(self) -> bytes:
        return json.dumps(self.body, separators=(",", ":")).encode()


SendPolls = Callable[[list[tuple[str, int]]], None]


def send_polls(polls: list[tuple[str, int]]) -> None:
    """Publish the polls a group of events asked for: one ``poll`` each, or ``poll_many``."""
    from flexpipe.tasks.steps import poll, poll_many

    if len(polls) == 1:
        job_id, seq = polls[0]
        poll.apply_async((job_id, seq))
        return
    for start in range(0, len(polls), POLLS_PER_MESSAGE):
        chunk = [[job_id, seq] for job_id, seq in polls[start : start + POLLS_PER_MESSAGE]]
        poll_many.apply_async((chunk,))


class Inbox:
    """Records verified events in groups on one thread; each :meth:`put` gets a future."""

    def __init__(self, store: Store, send: SendPolls = send_polls) -> None:
        self._store = store
        self._send = send
        self._queue: queue.SimpleQueue[tuple[WebhookEvent, Future[WebhookBatch]]] = (
            queue.SimpleQueue()
        )
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def put(self, event: WebhookEvent) -> Future[WebhookBatch]:
        future: Future[WebhookBatch] = Future()
        self._ensure_thread()
        self._queue.put((event, future))
        return future

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="flexpipe-webhooks", daemon=True
                )
                self._pid = os.getpid()
                self._thread.start()

    def _run(self) -> None:
        while True:
            group = [self._queue.get()]
            while len(group) < MAX_GROUP:
                try:
                    group.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._record(group)

    def _record(self, group: list[tuple[WebhookEvent, Future[WebhookBatch]]]) -> None:
        try:
            batch = self._store.record_webhooks([event for event, _ in group])
        except Exception as exc:  # the provider retries what we did not acknowledge
            log.exception("webhooks: %d event(s) not recorded", len(group))
            for _, future in group:
                future.set_exception(exc)
            return
        if batch.polls:
            try:
                self._send(batch.polls)
            except Exception:
                # Recorded, and each job's next poll is due now in SQL: the sweeper sends it.
                log.exception("webhooks: polls of %d job(s) not sent", len(batch.polls))
        for response_id in batch.unknown:
            log.info("webhook about response %s, which no job holds (yet)", response_id)
        for _, future in group:
            future.set_result(batch)


class Receiver:
    """Verifies a delivery, records it and answers; framework-free (bytes and headers in,
    :class:`Reply` out)."""

    def __init__(self, verifier: WebhookVerifier, inbox: Inbox) -> None:
        self.verifier = verifier
        self.inbox = inbox

    def accept(self, body: bytes, headers: Mapping[str, str]) -> Reply | Future[WebhookBatch]:
        """Verify; a :class:`Reply` if the delivery is answered now, else its commit's future."""
        if len(body) > MAX_BODY:
            return Reply(413, {"error": "body too large"})
        try:
            event = self.verifier.verify(body, headers)
        except InvalidWebhook as exc:
            log.warning("%s", exc.message)
            return Reply(400, {"error": exc.message})
        if event.type not in RESPONSE_EVENT_TYPES:
            return Reply(200, {"status": "ignored", "type": event.type})
        return self.inbox.put(event)

    def handle(self, body: bytes, headers: Mapping[str, str]) -> Reply:
        """Answer one delivery (blocks until its group is committed)."""
        accepted = self.accept(body, headers)
        if isinstance(accepted, Reply):
            return accepted
        try:
            accepted.result(timeout=COMMIT_WAIT)
        except FutureTimeout:
            return Reply(503, {"error": "not recorded in time; deliver again"})
        except Exception:
            return Reply(503, {"error": "not recorded; deliver again"})
        return OK

    async def handle_async(self, body: bytes, headers: Mapping[str, str]) -> Reply:
        """The same for an event loop (ASGI, aiohttp): the commit is awaited, not blocked on."""
        accepted = self.accept(body, headers)
        if isinstance(accepted, Reply):
            return accepted
        try:
            await asyncio.wait_for(asyncio.wrap_future(accepted), COMMIT_WAIT)
        except TimeoutError:
            return Reply(503, {"error": "not recorded in time; deliver again"})
        except Exception:
            return Reply(503, {"error": "not recorded; deliver again"})
        return OK


#: The answer to a recorded (or already recorded) event.
OK = Reply(200, {"status": "ok"})


_lock = threading.Lock()
_receiver: Receiver | None = None


def receiver() -> Receiver:
    """This process's receiver, built on first use from the settings and the runtime."""
    global _receiver
    current = _receiver
    if current is not None:
        return current
    with _lock:
        if _receiver is None:
            rt = runtime()
            secret = rt.settings.webhook_secret
            verifier = WebhookVerifier(
                None if secret is None else secret.get_secret_value(),
                tolerance=rt.settings.webhook_tolerance,
            )
            _receiver = Receiver(verifier, Inbox(rt.store))
        return _receiver


@on_configure
def reset() -> None:
    """Forget this process's receiver (new settings: new secret, new store)."""
    global _receiver
    with _lock:
        _receiver = None


# -- WSGI and ASGI -------------------------------------------------------------------------

_REASONS = {
    200: "200 OK",
    400: "400 Bad Request",
    405: "405 Method Not Allowed",
    411: "411 Length Required",
    413: "413 Content Too Large",
    503: "503 Service Unavailable",
}


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The receiver as a WSGI application (POST the provider's deliveries to it)."""
    if environ.get("REQUEST_METHOD") != "POST":
        reply = Reply(405, {"error": "POST webhook deliveries here"})
    else:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if length < 0:
            reply = Reply(411, {"error": "Content-Length required"})
        elif length > MAX_BODY:
            reply = Reply(413, {"error": "body too large"})
        else:
            body = environ["wsgi.input"].read(length)
            headers = {
                key[5:].replace("_", "-").lower(): str(value)
                for key, value in environ.items()
                if key.startswith("HTTP_")
            }
            reply = receiver().handle(body, headers)
    payload = reply.encoded()
    start_response(
        _REASONS.get(reply.status, str(reply.status)),
        [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))],
    )
    return [payload]


Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def asgi_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The receiver as an ASGI application (HTTP only)."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            pass
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] != "http":
        return
    if scope.get("method") != "POST":
        reply = Reply(405, {"error": "POST webhook deliveries here"})
    else:
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                break
            chunks.append(chunk)
            more = message.get("more_body", False)
        if size > MAX_BODY:
            reply = Reply(413, {"error": "body too large"})
        else:
            headers = {
                key.decode("latin-1").lower(): value.decode("latin-1")
                for key, value in scope["headers"]
            }
            reply = await receiver().handle_async(b"".join(chunks), headers)
    payload = reply.encoded()
    await send(
        {
            "type": "http.response.start",
            "status": reply.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
