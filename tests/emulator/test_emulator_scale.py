"""Scale, lightly: thousands of queued responses without a task or timer each."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

from flexpipe.emulator import EmulatorHandle
from flexpipe.emulator.service import Emulator
from tests.emulator.helpers import client, http, stats


def test_five_thousand_queued_responses(start: Callable[..., EmulatorHandle]) -> None:
    h = start(slots=8, latency={"flex": "fixed:3600"}, queue_delay={"flex": "fixed:0"})

    def create_many(emu: Emulator, n: int) -> list[str]:
        body: dict[str, Any] = {
            "model": "m",
            "input": "hello",
            "service_tier": "flex",
            "background": True,
        }
        return [emu.create(body).id for _ in range(n)]

    ids: Any = h.call(create_many, h.emulator, 5000)
    via_http = client(h).responses.create(
        model="m", input="x", service_tier="flex", background=True
    )
    totals = stats(h, responses=False)["totals"]
    assert totals["creates"] == 5001 and totals["responses_live"] == 5001
    assert totals["in_progress"] == 8 and totals["slots_busy"] == 8
    assert totals["queued"] == 4993
    assert "responses" not in stats(h, responses=False)
    c = client(h)
    assert c.responses.retrieve(ids[0]).status == "in_progress"
    assert c.responses.retrieve(ids[-1]).status == "queued"
    assert c.responses.retrieve(via_http.id).status == "queued"
    status, _, body = http(h, "GET", f"/_emulator/responses/{ids[0]}")
    assert status == 200 and b'"polls":1' in body
    # the scheduler keeps one timer, not one per response
    tasks: Any = h.call(lambda: len(asyncio.all_tasks()))
    assert tasks < 20
    assert http(h, "POST", "/_emulator/reset")[0] == 200
    assert stats(h, responses=False)["totals"]["responses_live"] == 0


def test_queue_drains_in_fifo_order(start: Callable[..., EmulatorHandle]) -> None:
    h = start(slots=1, latency={"flex": "fixed:0.005"}, queue_delay={"flex": "fixed:0"})
    c = client(h)
    ids = [
        c.responses.create(model="m", input=f"job {i}", service_tier="flex", background=True).id
        for i in range(20)
    ]
    for rid in ids:
        while c.responses.retrieve(rid).status != "completed":
            pass
    per_id = stats(h)["responses"]
    starts = [per_id[rid]["in_progress_at"] for rid in ids]
    assert starts == sorted(starts)
    for a, b in itertools.pairwise(ids):
        assert per_id[b]["in_progress_at"] >= per_id[a]["finished_at"]


def test_flex_deadline_fails_jobs_still_queued(start: Callable[..., EmulatorHandle]) -> None:
    h = start(
        slots=1, latency={"flex": "fixed:0.3"}, queue_delay={"flex": "fixed:0"}, flex_deadline_s=0.1
    )
    c = client(h)
    first = c.responses.create(model="m", input="a", service_tier="flex", background=True)
    late = c.responses.create(model="m", input="b", service_tier="flex", background=True)
    for rid in (first.id, late.id):
        while c.responses.retrieve(rid).status in ("queued", "in_progress"):
            pass
    assert c.responses.retrieve(first.id).status == "completed"
    failed = c.responses.retrieve(late.id)
    assert failed.status == "failed" and failed.error is not None
    assert "completion window" in failed.error.message
    assert stats(h)["responses"][late.id]["in_progress_at"] is None


def test_unlimited_slots(start: Callable[..., EmulatorHandle]) -> None:
    h = start(slots=0, latency={"flex": "fixed:3600"}, queue_delay={"flex": "fixed:0"})
    c = client(h)
    for _ in range(100):
        c.responses.create(model="m", input="x", service_tier="flex", background=True)
    totals = stats(h, responses=False)["totals"]
    assert totals["in_progress"] == 100 and totals["queued"] == 0
