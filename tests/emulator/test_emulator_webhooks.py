"""Issue 12, the emulator's part: signed ``response.*`` webhooks, retried, with seeded faults.

A real HTTP receiver (stdlib ``http.server`` in a thread) gets the events; every delivery is
checked with the ``openai`` SDK's own ``client.webhooks.unwrap()``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import openai
import pytest
from openai.types.webhooks import ResponseCompletedWebhookEvent

from flexpipe.emulator import EmulatorHandle
from flexpipe.emulator.webhooks import new_secret
from tests.emulator.helpers import client, http, set_faults, stats

SECRET = new_secret()
SDK = openai.OpenAI(api_key="unused", base_url="http://127.0.0.1:9/v1")
#: Realtime lane (default tier) fast; flex slow, so a flex response can be cancelled.
LATENCY = {"realtime": "fixed:0.01", "flex": "fixed:600", "background": "fixed:600"}


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    valid: bool

    @property
    def event(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data


class Receiver:
    """Records every POST; answers ``statuses`` in turn (then 200), 400 to a bad signature."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.statuses: list[int] = []
        self.release = threading.Event()
        self.release.set()
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    SDK.webhooks.unwrap(body, headers, secret=SECRET)
                    valid = True
                except openai.InvalidWebhookSignatureError:
                    valid = False
                receiver.release.wait(20)
                with receiver._cond:
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    receiver.deliveries.append(Delivery(headers, body, valid))
                    receiver._cond.notify_all()
                self.send_response(status if valid else 400)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def wait(self, n: int) -> list[Delivery]:
        """Block until ``n`` deliveries arrived (fails after 20 s); returns them all."""
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.deliveries) >= n, 20), (
                f"{len(self.deliveries)} of {n} deliveries"
            )
            return list(self.deliveries)

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def hooked(
    start: Callable[..., EmulatorHandle], receiver: Receiver
) -> Callable[..., EmulatorHandle]:
    """``hooked(**config)``: an openai-flavour emulator that sends webhooks to ``receiver``."""

    def _start(**overrides: Any) -> EmulatorHandle:
        kwargs: dict[str, Any] = {
            "flavor": "openai",
            "latency": LATENCY,
            "webhook_urls": (receiver.url,),
            "webhook_secret": SECRET,
            "webhook_retry_delay_s": 0.01,
            **overrides,
        }
        return start(**kwargs)

    return _start


def wait_stats(h: EmulatorHandle, ok: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Poll ``/_emulator/stats`` until ``ok(stats["webhooks"])`` (fails after 20 s)."""
    for _ in range(2000):
        hooks: dict[str, Any] = stats(h, responses=False)["webhooks"]
        if ok(hooks):
            return hooks
        time.sleep(0.01)
    raise AssertionError(f"webhook stats never matched: {hooks}")


def finish(c: openai.OpenAI, **kwargs: Any) -> str:
    """Create a background response and poll it until it is terminal; its id."""
    kwargs.setdefault("input", "hello")
    rid = c.responses.create(model="m", background=True, **kwargs).id
    for _ in range(2000):
        if c.responses.retrieve(rid).status not in ("queued", "in_progress"):
            return rid
        time.sleep(0.01)
    raise AssertionError(f"{rid} never finished")


def unwrap(d: Delivery) -> Any:
    return SDK.webhooks.unwrap(d.body, d.headers, secret=SECRET)


def test_every_terminal_status_sends_an_event_the_sdk_verifies(
    hooked: Callable[..., EmulatorHandle], receiver: Receiver
) -> None:
    h = hooked()
    c = client(h)
    done = finish(c)
    short = finish(c, max_output_tokens=16, input="word " * 200)
    slow = c.responses.create(model="m", input="x", background=True, service_tier="flex").id
    c.responses.cancel(slow)
    c.responses.create(model="m", input="not background")  # sends nothing
    set_faults(h, fail_rate=1.0)
    failed = finish(c)
    got = receiver.wait(4)
    events = [unwrap(d) for d in got]
    assert [(e.type, e.data.id) for e in events] == [
        ("response.completed", done),
        ("response.incomplete", short),
        ("response.cancelled", slow),
        ("response.failed", failed),
    ]
    assert isinstance(events[0], ResponseCompletedWebhookEvent)
    for d, e in zip(got, events, strict=True):
        assert e.id.startswith("evt_") and e.object == "event" and isinstance(e.created_at, int)
        assert d.headers["webhook-id"].startswith("wh_")
        assert d.headers["webhook-signature"].startswith("v1,")
        assert d.headers["content-type"] == "application/json"
        with pytest.raises(openai.InvalidWebhookSignatureError):
            SDK.webhooks.unwrap(d.body, d.headers, secret=new_secret())
    assert c.responses.retrieve(done).status == "completed"
    hooks = wait_stats(h, lambda s: s["sent"] == 4)
    assert hooks["events"] == 4 and hooks["failed_attempts"] == 0 and hooks["pending"] == 0


def test_doubleword_sends_no_response_webhooks(
    start: Callable[..., EmulatorHandle], receiver: Receiver
) -> None:
    h = start(webhook_urls=(receiver.url,), webhook_secret=SECRET, latency=LATENCY)
    c = client(h)
    rid = c.responses.create(model="m", input="x", background=True).id
    while c.responses.retrieve(rid).status != "completed":
        time.sleep(0.01)
    assert stats(h)["webhooks"]["events"] == 0 and receiver.deliveries == []


def test_receivers_can_be_set_at_run_time(
    start: Callable[..., EmulatorHandle], receiver: Receiver
) -> None:
    h = start(flavor="openai", latency=LATENCY)
    bad = http(h, "POST", "/_emulator/webhooks", {"urls": [receiver.url]})
    assert bad[0] == 400 and b"secret" in bad[2]
    status, _, body = http(
        h, "POST", "/_emulator/webhooks", {"urls": [receiver.url], "secret": SECRET}
    )
    assert status == 200 and json.loads(body) == {"urls": [receiver.url], "secret_set": True}
    assert SECRET.encode() not in http(h, "GET", "/_emulator/webhooks")[2]
    rid = finish(client(h))
    assert unwrap(receiver.wait(1)[0]).data.id == rid


def test_a_500_is_retried_with_the_same_webhook_id(
    hooked: Callable[..., EmulatorHandle], receiver: Receiver
) -> None:
    receiver.statuses = [500, 503]
    h = hooked()
    rid = finish(client(h))
    got = receiver.wait(3)
    assert len({d.headers["webhook-id"] for d in got}) == 1
    assert all(unwrap(d).data.id == rid for d in got)
    hooks = wait_stats(h, lambda s: s["sent"] == 1)
    assert hooks["failed_attempts"] == 2 and hooks["gave_up"] == 0


def test_attempts_are_bounded_and_connection_errors_retry(
    hooked: Callable[..., EmulatorHandle], receiver: Receiver
) -> None:
    receiver.statuses = [500] * 10
    h = hooked(webhook_max_attempts=3, webhook_urls=(receiver.url, "http://127.0.0.1:9/closed"))
    finish(client(h))
    hooks = wait_stats(h, lambda s: s["gave_up"] == 2)
    assert hooks["failed_attempts"] == 6 and hooks["sent"] == 0
    assert len(receiver.deliveries) == 3


def test_delivery_does_not_block_the_emulator(
    hooked: Callable[..., EmulatorHandle], receiver: Receiver
) -> None:
    receiver.release.clear()  # the receiver holds the first delivery
    h = hooked(webhook_timeout_s=30)
    c = client(h)
    first = finish(c)
    second = finish(c)  # created, processed and polled while the receiver hangs
    assert c.responses.retrieve(first).status == "completed"
    assert receiver.deliveries == []
    receiver.release.set()
    assert [unwrap(d).data.id for d in receiver.wait(2)] == [first, second]


def test_fault_dropped(hooked: Callable[..., EmulatorHandle], receiver: Receiver) -> None:
    h = hooked(faults={"webhook_drop_rate": 1.0})
    finish(client(h))
    finish(client(h))
    hooks = stats(h)["webhooks"]
    assert hooks["events"] == 2 and hooks["dropped"] == 2 and hooks["pending"] == 0
    assert receiver.deliveries == []


def test_fault_duplicated(hooked: Callable[..., EmulatorHandle], receiver: Receiver) -> None:
    h = hooked(faults={"webhook_duplicate_rate": 1.0})
    rid = finish(client(h))
    a, b = receiver.wait(2)
    assert a.headers["webhook-id"] == b.headers["webhook-id"] and a.body == b.body
    assert unwrap(a).data.id == unwrap(b).data.id == rid
    assert wait_stats(h, lambda s: s["sent"] == 2)["duplicated"] == 1


def test_fault_delayed(hooked: Callable[..., EmulatorHandle], receiver: Receiver) -> None:
    h = hooked(faults={"webhook_delay_rate": 1.0, "webhook_delay_ms": 50})
    rid = finish(client(h))
    assert unwrap(receiver.wait(1)[0]).data.id == rid
    assert stats(h)["webhooks"]["delayed"] == 1


def test_fault_out_of_order(hooked: Callable[..., EmulatorHandle], receiver: Receiver) -> None:
    # every other event is held back until the next one is sent
    h = hooked(faults={"webhook_reorder_rate": 1.0, "webhook_delay_ms": 600_000})
    c = client(h)
    ids = []
    for n in range(1, 5):
        ids.append(finish(c))
        wait_stats(h, lambda s, n=n: s["events"] == n)
    got = [unwrap(d).data.id for d in receiver.wait(4)]
    assert got == [ids[1], ids[0], ids[3], ids[2]]
    assert stats(h)["webhooks"]["reordered"] == 2


def test_fault_badly_signed(hooked: Callable[..., EmulatorHandle], receiver: Receiver) -> None:
    h = hooked(faults={"webhook_bad_signature_rate": 1.0}, webhook_max_attempts=2)
    finish(client(h))
    got = receiver.wait(2)
    assert not any(d.valid for d in got)
    for d in got:
        with pytest.raises(openai.InvalidWebhookSignatureError):
            unwrap(d)
    hooks = wait_stats(h, lambda s: s["gave_up"] == 1)
    assert hooks["bad_signature"] == 1 and hooks["failed_attempts"] == 2 and hooks["sent"] == 0


def test_faults_are_deterministic_by_seed(
    hooked: Callable[..., EmulatorHandle], receiver: Receiver
) -> None:
    def delivered(seed: int) -> list[int]:
        receiver.deliveries.clear()
        h = hooked(seed=seed, faults={"webhook_drop_rate": 0.5})
        c = client(h)
        ids = []
        for n in range(1, 9):
            ids.append(finish(c))
            wait_stats(h, lambda s, n=n: s["events"] == n)
        hooks = wait_stats(h, lambda s: s["sent"] + s["dropped"] == 8)
        received = {unwrap(d).data.id for d in receiver.wait(hooks["sent"])}
        h.stop()
        return [i for i, rid in enumerate(ids) if rid in received]

    first = delivered(1)
    assert delivered(1) == first
    assert 0 < len(first) < 8 and delivered(2) != first


def test_the_sender_stops_with_the_emulator(
    hooked: Callable[..., EmulatorHandle], receiver: Receiver
) -> None:
    receiver.statuses = [500]
    h = hooked(webhook_retry_delay_s=600)  # a retry is pending when we stop
    finish(client(h))
    receiver.wait(1)
    wait_stats(h, lambda s: s["retrying"] == 1)
    h.stop()
    assert not h._thread.is_alive()
    assert len(receiver.deliveries) == 1
