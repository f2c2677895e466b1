"""Bulk jobs with a real worker: counters right at every sample, completion once."""

from __future__ import annotations

import time

import pytest

from flexpipe.errors import ValidationError
from tests.integration import callbacks
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration


def _run_bulk(live: Stack, n: int, timeout: float) -> None:
    from flexpipe.tasks import api

    texts = [f"Ticket {i}: the printer on floor {i % 7} jams when duplexing." for i in range(n)]
    started = time.perf_counter()
    bulk_id = api.enqueue_many(
        texts,
        name=f"tickets-{n}",
        on_complete="tests.record_callback",
        instructions="Summarise the ticket.",
    )
    enqueue_s = time.perf_counter() - started
    samples = []
    end = time.monotonic() + timeout
    while True:
        bulk = api.get_bulk(bulk_id)
        samples.append(bulk)
        # Every sample adds up: nothing counted twice, nothing missing.
        assert bulk.pending + bulk.in_flight + bulk.done == bulk.total == n, bulk
        assert bulk.done == (
            bulk.completed + bulk.failed + bulk.incomplete + bulk.cancelled + bulk.expired
        )
        if bulk.finished:
            break
        assert time.monotonic() < end, f"bulk not finished: {bulk}\n{live.log_tail()}"
        time.sleep(0.2)
    dones = [s.done for s in samples]
    assert dones == sorted(dones)  # progress never goes backwards
    assert samples[-1].completed == n
    # The completion callback fires exactly once, with the bulk id.
    deadline = time.monotonic() + 20
    while callbacks.counts(live.store.engine).get(bulk_id, 0) == 0:
        assert time.monotonic() < deadline, live.log_tail()
        time.sleep(0.1)
    time.sleep(1.0)
    assert callbacks.counts(live.store.engine)[bulk_id] == 1
    assert enqueue_s < 60  # sanity only; speed is measured by `make bench`


def test_bulk_of_200_on_each_backend(live: Stack) -> None:
    _run_bulk(live, 200, timeout=120)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("stack", ["services"], indirect=True)
def test_bulk_of_2000_on_redis_and_postgres(live: Stack) -> None:
    _run_bulk(live, 2000, timeout=400)


def test_a_bad_item_names_its_position_and_writes_nothing(live: Stack) -> None:
    from flexpipe.tasks import api

    before = sum(live.store.status_counts().values())
    with pytest.raises(ValidationError) as info:
        api.enqueue_many(["fine", {"input": "x", "temperature": 9}, "fine"])
    assert info.value.field == "requests[1].temperature"
    assert sum(live.store.status_counts().values()) == before
