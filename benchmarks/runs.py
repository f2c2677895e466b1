"""What every figure builds on: the plan (full or quick), the run context, the three
alternatives' runs (flexpipe, the loop, the blocking task) and the waits between them.

Every wait is bounded in count and time; every process and database is cleaned up by the
:class:`~benchmarks.services.Cleanup` it was registered with, also on failure.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.loop import job_text
from benchmarks.procs import (
    CpuMeter,
    postgres_pids,
    read_stat,
    redis_pids,
    session_pids,
)
from benchmarks.services import (
    ESTIMATE_REFRESH,
    REDIS_URL,
    ROOT,
    BlockingWorker,
    Cleanup,
    Emulator,
    FlexpipeStack,
    stop_process,
)

TERMINAL = {"completed", "failed", "cancelled", "incomplete", "expired"}


ALTS = ("flexpipe", "loop", "blocking")


@dataclass
class Plan:
    """Sizes and time scales of one run (``--quick`` or full)."""

    quick: bool
    reps: int = 3
    #: Worker processes per Celery worker (Celery's default: the number of CPUs).
    concurrency: int = field(default_factory=lambda: os.cpu_count() or 2)
    # 1. overhead (instant provider latency)
    f1_jobs: int = 2000
    f1_scale: float = 0.001
    # 2. polls per job and detection delay (lognormal median 60 s, sigma 0.6)
    #: Providers report ``completed_at`` in whole seconds and flexpipe learns latencies
    #: from it: at 0.5 that is up to 2 unscaled s.
    f2_scale: float = 0.5
    f2_warmup: int = 40
    f2_flex_jobs: int = 200
    f2_rate: float = 10.0  # flexpipe enqueues per real second
    f2_loop_jobs: int = 200
    f2_blocking_jobs: int = 4
    # 3. jobs in flight (fixed provider latency, long enough to hold them all at once)
    f3_jobs: int = 100_000
    f3_chunk: int = 10_000
    #: Real latency (f3_latency x f3_scale) must outlast submitting every job (~250/s
    #: here); 45 unscaled s: the warm-up jobs (fixed schedule) are seen on their 3rd poll.
    f3_scale: float = 11.0
    f3_latency: float = 45.0  # unscaled seconds
    f3_warmup: int = 30
    f3_timeout: float = 45 * 60
    #: Figure 3 gives up when no job was stored for this long after the first was due.
    f3_stall: float = 180.0
    # 4. enqueue cost
    f4_calls: int = 1000
    f4_bulk: int = 10_000

    @classmethod
    def make(cls, quick: bool) -> Plan:
        if not quick:
            return cls(quick=False)
        return cls(
            quick=True,
            f1_jobs=300,
            # Whole-second timestamps cost up to 10 unscaled s at 0.1; flexpipe counts them
            # as mid-second, so the fit stays centred (the full run keeps 0.5).
            f2_scale=0.1,
            f2_flex_jobs=60,
            f2_rate=20.0,
            f2_loop_jobs=64,
            f2_blocking_jobs=2,
            f3_jobs=10_000,
            # 40 s real: submitting 10,000 takes ~31 s here, so all are in flight at once.
            f3_scale=0.9,
            f3_timeout=10 * 60,
        )


class Ctx:
    """What the figures share: the plan, a work directory, a log, the global clean-up."""

    def __init__(self, plan: Plan, work_dir: Path, cleanup: Cleanup) -> None:
        self.plan = plan
        self.work_dir = work_dir
        self.cleanup = cleanup
        self.t0 = time.monotonic()

    def log(self, message: str) -> None:
        print(f"[{time.monotonic() - self.t0:7.1f}s] {message}", flush=True)


def wait_until(
    check: Callable[[], bool], timeout: float, interval: float = 0.2, what: str = ""
) -> bool:
    """Poll ``check`` until true or ``timeout`` s pass (bounded); return whether it held."""
    end = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 2):
        if check():
            return True
        if time.monotonic() >= end:
            break
        time.sleep(interval)
    if what:
        print(f"  timeout after {timeout:.0f}s waiting for {what}", flush=True)
    return False


def learned_wait(ctx: Ctx, stack: FlexpipeStack, warm_ids: list[str], timeout: float) -> None:
    """Wait until every worker process polls on the learned schedule.

    Each process re-reads an estimate of fewer than ``FLEXPIPE_POLL_MIN_SAMPLES`` (20)
    jobs every sixth of ``FLEXPIPE_ESTIMATE_REFRESH`` (5 s here): so wait until 20 warm-up
    jobs are stored, then until that long and a second more has passed since the 20th was.
    """
    need = min(20, len(warm_ids))
    wait_until(
        lambda: stack.store.status_counts(warm_ids).get("completed", 0) >= need,
        timeout,
        0.5,
        "warm-up jobs",
    )
    rows = stack.sql(
        "select extract(epoch from now() - stored_at) from flexpipe_results "
        "where job_id = any(:ids) order by stored_at limit 1 offset :k",
        ids=warm_ids,
        k=need - 1,
    )
    since = float(rows[0][0]) if rows else 0.0
    rest = max(0.0, ESTIMATE_REFRESH / 6 + 1 - since)
    ctx.log(
        f"warm-up: {need} jobs stored ({since:.0f} s ago); {rest:.1f} s until every worker "
        "process has re-read them"
    )
    time.sleep(rest)


def texts(n: int, start: int = 0) -> list[str]:
    return [job_text(i) for i in range(start, start + n)]


def cpu_groups(
    *,
    worker_sid: int | None,
    emulator: Emulator,
    database: str | None,
    beat_sid: int | None = None,
) -> dict[str, Callable[[], list[int]]]:
    groups: dict[str, Callable[[], list[int]]] = {
        "emulator": lambda: [emulator.pid],
        "redis": redis_pids,
    }
    if worker_sid is not None:
        sids = [worker_sid] + ([beat_sid] if beat_sid is not None else [])
        groups["workers"] = lambda: [pid for sid in sids for pid in session_pids(sid)]
    if database is not None:
        groups["postgres"] = lambda: postgres_pids(database)
    return groups


class LoopHandle:
    def __init__(self, proc: subprocess.Popen[bytes], out: Path) -> None:
        self.proc, self.out = proc, out


def start_loop(
    emu: Emulator, ctx: Ctx, n: int, scale: float, tag: str, max_seconds: float
) -> LoopHandle:
    """Start the asyncio loop as its own process (see :mod:`benchmarks.loop`)."""
    out = ctx.work_dir / f"loop-{tag}.json"
    argv = [
        sys.executable, "-m", "benchmarks.loop", "--base-url", emu.base_url,
        "--jobs", str(n), "--time-scale", f"{scale:g}", "--tag", tag,
        "--max-seconds", f"{max_seconds:g}", "--out", str(out),
    ]  # fmt: skip
    with open(ctx.work_dir / "loop.log", "ab") as log:
        proc = subprocess.Popen(
            argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
    ctx.cleanup.push(f"loop {tag}", lambda: stop_process(proc))
    return LoopHandle(proc, out)


def finish_loop(handle: LoopHandle, timeout: float) -> dict[str, Any]:
    try:
        handle.proc.wait(timeout=timeout)
    finally:
        stop_process(handle.proc)
    result: dict[str, Any] = json.loads(handle.out.read_text())
    return result


def loop_run(
    emu: Emulator,
    ctx: Ctx,
    n: int,
    scale: float,
    tag: str,
    max_seconds: float,
    *,
    sample_rss_at: float | None = None,
) -> dict[str, Any]:
    """Run the asyncio loop as its own process; return its JSON plus emulator CPU."""
    meter = CpuMeter(cpu_groups(worker_sid=None, emulator=emu, database=None)).start()
    handle = start_loop(emu, ctx, n, scale, tag, max_seconds)
    proc = handle.proc
    rss = 0
    try:
        if sample_rss_at is not None:
            time.sleep(sample_rss_at)
            st = read_stat(proc.pid)
            rss = st.rss if st else 0
        proc.wait(timeout=max_seconds + 60)
    finally:
        stop_process(proc)
    cpu = meter.stop()
    result: dict[str, Any] = json.loads(handle.out.read_text())
    result["cpu"] = {**cpu, "loop": result["cpu_s"]}
    result["rss"] = rss
    return result


def blocking_run(
    bw: BlockingWorker,
    emu: Emulator,
    n: int,
    tag: str,
    timeout: float,
    *,
    wait: bool = True,
) -> dict[str, Any]:
    """Send ``n`` blocking tasks; wait until each pushed its done record."""
    import redis
    from celery import Celery

    client = redis.Redis.from_url(REDIS_URL)
    sender = Celery("flexbench-sender", broker=REDIS_URL, set_as_current=False)
    key = f"{bw.done_key}:{tag}"
    try:
        meter = CpuMeter(cpu_groups(worker_sid=bw.sid, emulator=emu, database=None)).start()
        batch = texts(n)
        cpu0, t0 = time.process_time(), time.time()
        with sender.producer_or_acquire() as producer:
            for text in batch:
                sender.send_task(
                    "flexbench.blocking_job", args=(text, tag), queue=bw.queue, producer=producer
                )
        app_cpu = time.process_time() - cpu0
        ok = True
        if wait:
            ok = wait_until(lambda: client.llen(key) >= n, timeout, 0.1, f"blocking {tag}")
        cpu = meter.stop()
        cpu["app"] = app_cpu
        done = [json.loads(x) for x in client.lrange(key, 0, -1)]
        client.delete(key)
    finally:
        sender.close()
        client.close()
    last = max((d[1] for d in done), default=math.nan)
    return {"jobs": n, "ok": ok, "elapsed": last - t0, "done": done, "cpu": cpu}


def fmt_cpu(cpu: dict[str, float], n: int) -> str:
    return ", ".join(f"{k} {v * 1000 / n:.2f}" for k, v in sorted(cpu.items())) + " ms/job"


def terminal_count(counts: dict[str, int]) -> int:
    return sum(v for k, v in counts.items() if k in TERMINAL)
