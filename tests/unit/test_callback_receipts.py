"""Callback receipts (issue 15 §4): a callback counts as delivered when a worker started
it, and the sweeper sends again, as the same message, one that never got there, but only
to a queue whose workers record receipts."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from celery.canvas import Signature

from flexpipe.flow import Next, callback_id
from flexpipe.models import build_request
from flexpipe.states import JobStatus
from flexpipe.store import NewJob, Outcome, Store
from flexpipe.tasks import delivery, steps, sweeper
from flexpipe.tasks import runtime as runtime_module
from tests.unit.test_sweeper import _runtime

CALLBACK = {"task": "myapp.summary_ready", "args": [], "kwargs": {}, "options": {}}


@pytest.fixture
def published(store: Store, monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    messages: list[tuple[Any, ...]] = []
    monkeypatch.setattr(
        Signature, "apply_async",
        lambda self, args=(), task_id=None, **_: messages.append(
            (self.task, tuple(args), task_id, self.options.get("queue"))
        ),
    )
    rt = _runtime(store)
    for module in (sweeper, steps, runtime_module):
        monkeypatch.setattr(module, "runtime", lambda: rt)
    return messages


def _finished_job(store: Store, callback: dict[str, Any] = CALLBACK) -> str:
    job_id, _ = store.add_job(NewJob(request=build_request("hello", model="m"), callback=callback))
    store.finish(job_id, Outcome(status=JobStatus.COMPLETED))
    return job_id


def _later(store: Store, seconds: float) -> None:
    later = store.now() + timedelta(seconds=seconds)
    store._clock = lambda: later


def test_only_the_current_attempts_callback_counts_as_received(
    store: Store, published: list[tuple[Any, ...]]
) -> None:
    job_id = _finished_job(store)
    assert delivery.is_callback_id(callback_id(job_id, 1))
    assert not delivery.is_callback_id("3f0b6a4e-8c1d-4d7e-9a51-6f6c65787069")  # uuid4
    assert not delivery.is_callback_id("not-a-uuid")
    assert not delivery.record(callback_id(job_id, 2), job_id)  # no such attempt yet
    assert not delivery.record(callback_id("someone-else", 1), job_id)
    assert delivery.record(callback_id(job_id, 1), job_id)
    assert not delivery.record(callback_id(job_id, 1), job_id)  # a redelivery: seen
    bulk_id, _ = store.add_bulk([], name=None, on_complete=CALLBACK)
    assert delivery.record(callback_id(bulk_id), bulk_id)
    assert not delivery.record(callback_id(bulk_id), bulk_id)


def test_a_callback_never_received_is_sent_again_as_the_same_message(
    store: Store, published: list[tuple[Any, ...]]
) -> None:
    rt = sweeper.runtime()
    timeout = rt.settings.callback_receipt_timeout
    queue = rt.settings.callback_queue
    job_id = _finished_job(store)
    received = _finished_job(store)
    elsewhere = _finished_job(store, {**CALLBACK, "options": {"queue": "other-app"}})
    for job in (job_id, received, elsewhere):
        steps.follow(job, Next("done", callback=store.require_job(job).callback, attempt=1))
    delivery.record(callback_id(received, 1), received)
    assert len(published) == 3

    _later(store, timeout + 1)
    assert sweeper.sweep()["unreceived"] == 0  # no worker records receipts: the old rule
    store.receiver_seen([queue])
    assert sweeper.sweep()["unreceived"] == 1
    assert published[-1] == ("myapp.summary_ready", (job_id,), callback_id(job_id, 1), queue)
    assert sweeper.sweep()["unreceived"] == 0  # sent again just now: not due yet

    store.receiver_seen([queue])
    _later(store, timeout + 1)
    store.receiver_seen([queue])
    delivery.record(callback_id(job_id, 1), job_id)
    assert sweeper.sweep()["unreceived"] == 0  # it got there this time
    assert len(published) == 4


def test_a_receiver_that_stopped_saying_so_gets_nothing_sent_again(
    store: Store, published: list[tuple[Any, ...]]
) -> None:
    rt = sweeper.runtime()
    timeout = rt.settings.callback_receipt_timeout
    store.receiver_seen([rt.settings.callback_queue])
    job_id = _finished_job(store)
    steps.follow(job_id, Next("done", callback=CALLBACK, attempt=1))
    _later(store, timeout + delivery.receiver_window(timeout) + 1)
    assert store.live_receivers(within=timeout) == set()
    assert sweeper.sweep()["unreceived"] == 0


def test_a_new_attempt_forgets_the_last_ones_receipt(
    store: Store, published: list[tuple[Any, ...]]
) -> None:
    job_id = _finished_job(store)
    steps.follow(job_id, Next("done", callback=CALLBACK, attempt=1))
    assert delivery.record(callback_id(job_id, 1), job_id)
    assert store.restart(job_id, reason="retried") == 2
    row = store.require_job(job_id)
    assert row.attempt == 2
    assert delivery.record(callback_id(job_id, 2), job_id)
