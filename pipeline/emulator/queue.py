"""The processing queue: a fixed number of slots, FIFO per lane, one timer for everything.

``flex`` and ``background`` responses wait in ``queued`` (at least their lane's queue delay)
until a slot is free (flex lane first), then run ``in_progress`` for their drawn processing
time; ``realtime`` responses skip the queue. There is no task or timer per response: due
times live in heaps and a single ``loop.call_at`` handle is re-armed for the earliest one,
so 100,000+ waiting responses cost only their records. In upstream mode a started response
is processed by one upstream call (an asyncio task per *running* response, bounded by slots).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable

from flexpipe.emulator.config import EmulatorConfig
from flexpipe.emulator.faults import Faults
from flexpipe.emulator.outputs import Output, generate
from flexpipe.emulator.records import Record
from flexpipe.emulator.store import Store

log = logging.getLogger("flexpipe.emulator")

#: ``(message, code)`` of an injected job failure.
INJECTED_FAILURE = (500, "The server had an error while processing your request (injected fault).")
DEADLINE_FAILURE = (500, "Request exceeded its completion window before it could be processed.")


class ProcessingError(Exception):
    """Raised by a processor when a job must end ``failed`` (e.g. the upstream said no)."""

    def __init__(self, message: str, code: int = 500) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


Processor = Callable[[Record], Awaitable[Output]]


def draw_latencies(config: EmulatorConfig, lane: str, index: int) -> tuple[float, float]:
    """``(queue delay, processing time)`` in real seconds for the ``index``-th create."""
    rng = random.Random(config.seed * 1_000_003 + index)
    delay = config.queue_delay[lane].draw(rng)
    proc = config.latency[lane].draw(rng)
    return config.scaled(delay), config.scaled(proc)


class Scheduler:
    """Moves records through ``queued → in_progress → terminal``."""

    def __init__(
        self,
        config: EmulatorConfig,
        faults: Faults,
        store: Store,
        processor: Processor | None = None,
        on_terminal: Callable[[Record], None] | None = None,
    ) -> None:
        self.config = config
        self.faults = faults
        self.store = store
        self.processor = processor
        self.on_terminal = on_terminal
        self.busy = 0
        self.queued = 0
        self.in_progress = 0
        self._fifo: dict[str, deque[Record]] = {"flex": deque(), "background": deque()}
        self._waiting: list[tuple[float, int, Record]] = []
        self._running: list[tuple[float, int, Record]] = []
        self._seq = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- public -------------------------------------------------------------------------

    def submit(self, rec: Record, queue_delay: float) -> None:
        """Accept a new ``queued`` record (must be called on the event loop)."""
        self._loop = asyncio.get_running_loop()
        self.queued += 1
        if rec.lane == "realtime":
            self._start(rec, self._loop.time())
        elif queue_delay > 0:
            self._push(self._waiting, self._loop.time() + queue_delay, rec)
        else:
            self._fifo[rec.lane].append(rec)
        self._tick()

    def cancel(self, rec: Record) -> bool:
        """Cancel a queued or in-progress record; ``False`` if it was already terminal."""
        if rec.terminal:
            return False
        self._finish(rec, "cancelled", None, None)
        self._tick()
        return True

    def abandon(self, rec: Record) -> None:
        """Stop work on a deleted or no-longer-wanted record without a visible transition."""
        if not rec.terminal:
            self._finish(rec, "cancelled", None, None)
            self._tick()

    def reset(self) -> None:
        """Forget all queued and running work (an emulator restart)."""
        for lane in self._fifo.values():
            lane.clear()
        self._waiting.clear()
        self._running.clear()
        for task in list(self._tasks):
            task.cancel()
        self.busy = self.queued = self.in_progress = 0

    @property
    def free_slots(self) -> float:
        return float("inf") if self.config.slots == 0 else self.config.slots - self.busy

    # -- internals ----------------------------------------------------------------------

    def _push(self, heap: list[tuple[float, int, Record]], due: float, rec: Record) -> None:
        self._seq += 1
        heapq.heappush(heap, (due, self._seq, rec))

    def _start(self, rec: Record, now: float) -> None:
        rec.status = "in_progress"
        rec.in_progress_at = time.time()
        self.queued -= 1
        self.in_progress += 1
        if rec.lane != "realtime":
            rec.in_slot = True
            self.busy += 1
        if self.processor is not None:
            task = asyncio.get_running_loop().create_task(self._run_processor(rec))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self._push(self._running, now + rec.proc_s, rec)

    async def _run_processor(self, rec: Record) -> None:
        assert self.processor is not None
        try:
            output = await self.processor(rec)
        except ProcessingError as exc:
            if not rec.terminal:
                self._finish(rec, "failed", None, (exc.code, exc.message))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an upstream bug must fail the job, not the emulator
            log.exception("processor failed for %s", rec.id)
            if not rec.terminal:
                self._finish(rec, "failed", None, (500, f"upstream processing error: {exc}"))
        else:
            if not rec.terminal:
                self._complete(rec, output)
        self._tick()

    def _complete(self, rec: Record, output: Output | None) -> None:
        if self.faults.fails(rec.index):
            self._finish(rec, "failed", None, INJECTED_FAILURE)
            return
        if output is None:
            body = rec.body
            text = body.get("text") if isinstance(body.get("text"), dict) else None
            fmt = text.get("format") if text else None
            output = generate(
                rec.messages,
                fmt if isinstance(fmt, dict) else None,
                body.get("max_output_tokens"),
                self.config.seed,
            )
        status = "incomplete" if output.truncated else "completed"
        self._finish(rec, status, output, None)

    def _finish(
        self, rec: Record, status: str, output: Output | None, error: tuple[int, str] | None
    ) -> None:
        if rec.status == "queued":
            self.queued -= 1
        elif rec.status == "in_progress":
            self.in_progress -= 1
        if rec.in_slot:
            rec.in_slot = False
            self.busy -= 1
        rec.status = status
        rec.output = output
        rec.error = error
        rec.finished_at = time.time()
        if rec.kind == "response":
            loop = self._loop or asyncio.get_running_loop()
            self.store.schedule_expiry(rec, loop.time())
        if self.on_terminal is not None:
            self.on_terminal(rec)
        rec.notify()

    def _tick(self) -> None:
        """Process everything due, fill free slots, re-arm the single timer."""
        loop = self._loop
        if loop is None:
            return
        now = loop.time()
        while True:
            progressed = False
            while self._running and self._running[0][0] <= now:
                _, _, rec = heapq.heappop(self._running)
                if rec.status == "in_progress":
                    self._complete(rec, None)
                    progressed = True
            while self._waiting and self._waiting[0][0] <= now:
                _, _, rec = heapq.heappop(self._waiting)
                if rec.status == "queued":
                    self._fifo[rec.lane].append(rec)
            progressed |= self._fill(now)
            if not progressed:
                break
        nxt = self.store.expire(now)
        for heap in (self._running, self._waiting):
            if heap and (nxt is None or heap[0][0] < nxt):
                nxt = heap[0][0]
        self._arm(nxt)

    def _fill(self, now: float) -> bool:
        started = False
        deadline = self.config.flex_deadline_s
        wall = time.time()
        for lane in ("flex", "background"):
            fifo = self._fifo[lane]
            while fifo and self.free_slots > 0:
                rec = fifo.popleft()
                if rec.status != "queued":
                    continue
                if deadline is not None and wall - rec.created_at > self.config.scaled(deadline):
                    self._finish(rec, "failed", None, DEADLINE_FAILURE)
                    continue
                self._start(rec, now)
                started = True
        return started

    def _arm(self, when: float | None) -> None:
        loop = self._loop
        if loop is None or when is None:
            return
        if self._timer is not None:
            if self._timer_at <= when:
                return
            self._timer.cancel()
        self._timer_at = when
        self._timer = loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = float("inf")
        self._tick()
