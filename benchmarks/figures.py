"""The four figures: each runs flexpipe, the loop and the blocking task on one emulator.

Every wait is bounded in count and time; every process and database is cleaned up by the
:class:`~benchmarks.services.Cleanup` it was registered with, also on failure.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.loop import job_text
from benchmarks.procs import (
    CpuMeter,
    RssMeter,
    all_stats,
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
from benchmarks.stats import median, percentile

TERMINAL = {"completed", "failed", "cancelled", "incomplete", "expired"}
#: flexpipe's settings in figure 1 (and its profile).
F1_ENV = {
    # Scaled default deadlines would be seconds: jobs wait in the queue longer.
    "FLEXPIPE_DEADLINE_FLEX": "3600000",
    "FLEXPIPE_SWEEP_INTERVAL": "1",
    # The fixed schedule (first poll 10 s, i.e. 10 ms here): whole-second completed_at
    # cannot tell an instant job from a 0.5 s one, and 0.5 s real is 500 s unscaled at
    # this time scale, so a learned schedule would park every job.
    "FLEXPIPE_LEARN_LATENCY": "false",
}
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
    # 5. history: finished jobs filled beside 10,000 in flight (benchmarks/history.py)
    f5_jobs: int = 5_000_000

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
            f5_jobs=200_000,
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


class PollTracer:
    """When each GET of the responses tagged ``prefix...`` happened (to ``interval``): a
    thread reads ``/_emulator/stats`` and notes when a response's ``polls`` count grows."""

    def __init__(self, emu: Emulator, prefix: str, interval: float = 0.25) -> None:
        import threading

        self.emu, self.prefix, self.interval = emu, prefix, interval
        self.times: dict[str, list[float]] = {}
        self.created: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="poll-tracer")

    def _run(self) -> None:
        end = time.monotonic() + 3 * 3600
        while not self._stop.wait(self.interval) and time.monotonic() < end:
            try:
                items = self.emu.responses()
            except OSError:
                continue
            now = time.time()
            for rid, v in items.items():
                if not str((v.get("metadata") or {}).get("bench", "")).startswith(self.prefix):
                    continue
                seen = self.times.setdefault(rid, [])
                self.created[rid] = v["queued_at"]
                seen.extend([now] * (int(v["polls"]) - len(seen)))

    def start(self) -> PollTracer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def first_get(self, scale: float) -> list[float]:
        """Seconds (unscaled) from create to the first GET, per response."""
        return [(t[0] - self.created[r]) / scale for r, t in self.times.items() if t]


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


# -- running one batch of each alternative --------------------------------------------------


def flexpipe_bulk(
    stack: FlexpipeStack, emu: Emulator, n: int, tag: str, timeout: float
) -> dict[str, Any]:
    """``enqueue_many`` ``n`` jobs and wait until all are stored."""
    from flexpipe.tasks import api

    stack.activate()
    meter = CpuMeter(
        cpu_groups(
            worker_sid=stack.sid, beat_sid=stack.beat_sid, emulator=emu, database=stack.db_name
        )
    ).start()
    batch = texts(n)
    cpu0, t0 = time.process_time(), time.time()
    bulk_id = api.enqueue_many(batch, metadata={"bench": tag})
    app_cpu = time.process_time() - cpu0

    def done() -> bool:
        bulk = stack.store.get_bulk(bulk_id)
        return bulk is not None and bulk.done >= n

    ok = wait_until(done, timeout, 0.1, f"flexpipe bulk {tag}")
    cpu = meter.stop()
    cpu["app"] = app_cpu
    rows = stack.sql(
        "select count(*), extract(epoch from max(r.stored_at)) from flexpipe_results r "
        "join flexpipe_jobs j on j.id = r.job_id where j.bulk_id = :b",
        b=bulk_id,
    )
    stored, last = rows[0]
    elapsed = float(last) - t0 if last is not None else math.nan
    return {"jobs": n, "stored": int(stored), "ok": ok, "elapsed": elapsed, "cpu": cpu}


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


# -- figure 1: overhead ---------------------------------------------------------------------


def figure1(ctx: Ctx) -> dict[str, Any]:
    plan = ctx.plan
    n, scale = plan.f1_jobs, plan.f1_scale
    local = Cleanup()
    try:
        emu = Emulator(
            time_scale=scale, latency="fixed:0", log_dir=ctx.work_dir, name="emulator-f1"
        ).start(local)
        stack = FlexpipeStack(
            emulator=emu,
            work_dir=ctx.work_dir,
            concurrency=plan.concurrency,
            time_scale=scale,
            name="f1",
            extra_env=F1_ENV,
        ).start(local, wait=False)
        bw = BlockingWorker(
            emulator=emu, work_dir=ctx.work_dir, concurrency=plan.concurrency, time_scale=scale
        ).start(local, wait=False)
        stack.ready()
        bw.ready()
        ctx.log(f"fig 1: warming up ({stack.db_name})")
        flexpipe_bulk(stack, emu, 40, "f1-warm", 120)
        blocking_run(bw, emu, 20, "f1-warm", 120)
        runs: dict[str, list[dict[str, Any]]] = {alt: [] for alt in ALTS}
        timeout = 60 + n / 10
        for rep in range(plan.reps):
            order = ALTS[rep % 3 :] + ALTS[: rep % 3]
            for alt in order:
                tag = f"f1-{alt}-{rep}"
                if alt == "flexpipe":
                    r = flexpipe_bulk(stack, emu, n, tag, timeout)
                elif alt == "loop":
                    r = loop_run(emu, ctx, n, scale, tag, timeout)
                    r["elapsed"] = r["finished"] - r["started"]
                    r["ok"] = r["unfinished"] == 0 and len(r["done"]) == n
                else:
                    r = blocking_run(bw, emu, n, tag, timeout)
                r["rate"] = n / r["elapsed"] if r["elapsed"] > 0 else math.nan
                r["polls"] = polls_per_job(emu, tag)
                r.pop("done", None)
                runs[alt].append(r)
                ctx.log(
                    f"fig 1 rep {rep} {alt}: {r['rate']:.1f} jobs/s, "
                    f"cpu {fmt_cpu(r['cpu'], n)}, polls/job {r['polls']:.2f}"
                )
        return {"jobs": n, "scale": scale, "runs": runs}
    finally:
        local.run()


def polls_per_job(emu: Emulator, tag: str) -> float:
    items = emu.responses(tag)
    return median([float(v["polls"]) for v in items.values()]) if items else math.nan


def fmt_cpu(cpu: dict[str, float], n: int) -> str:
    return ", ".join(f"{k} {v * 1000 / n:.2f}" for k, v in sorted(cpu.items())) + " ms/job"


# -- figure 2: polls per job and detection delay --------------------------------------------


class Fig2Background:
    """Figure 2's stack, started early so that flexpipe learns the latency meanwhile."""

    def __init__(self, ctx: Ctx) -> None:
        plan = ctx.plan
        self.ctx = ctx
        self.scale = plan.f2_scale
        self.emu = Emulator(
            time_scale=self.scale,
            latency="lognormal:60,0.6",
            log_dir=ctx.work_dir,
            name="emulator-f2",
            seed=2,
        ).start(ctx.cleanup)
        self.stack = FlexpipeStack(
            emulator=self.emu,
            work_dir=ctx.work_dir,
            concurrency=plan.concurrency,
            time_scale=self.scale,
            name="f2",
            extra_env={"FLEXPIPE_SWEEP_INTERVAL": "1"},
        ).start(ctx.cleanup, wait=False)  # workers boot in parallel; warm-up waits in Redis
        self.bw = BlockingWorker(
            emulator=self.emu,
            work_dir=ctx.work_dir,
            concurrency=plan.concurrency,
            time_scale=self.scale,
        ).start(ctx.cleanup, wait=False)
        from flexpipe.tasks import api

        self.stack.activate()
        self.warm_ids = [
            api.enqueue(text, metadata={"bench": "f2-warmup"}) for text in texts(plan.f2_warmup)
        ]
        self.warm_started = time.monotonic()

    def stop(self) -> None:
        """Stop the workers (the database and emulator stay until the clean-up)."""
        self.stack.stop_worker()
        self.bw.stop()


def figure2(ctx: Ctx, bg: Fig2Background) -> dict[str, Any]:
    """Three runs that overlap: run k starts when run k-1 has sent its jobs (the latency
    tail, minutes at this time scale, is paid once). In each run flexpipe gets jobs at
    ``f2_rate`` per second, a loop process of its own gets its jobs at once (64 at a time)
    and the blocking worker gets its jobs; all on the one emulator."""
    from flexpipe.tasks import api

    plan = ctx.plan
    stack, emu, scale = bg.stack, bg.emu, bg.scale
    # Learned estimates are re-read every FLEXPIPE_ESTIMATE_REFRESH s per worker process:
    # measured jobs start once every process has re-read them with at least
    # FLEXPIPE_POLL_MIN_SAMPLES (20) finished warm-up jobs in SQL.
    stack.ready()
    bg.bw.ready()
    ctx.log("fig 2: waiting for the warm-up jobs (flexpipe learns the latency)")
    learned_wait(ctx, stack, bg.warm_ids, 300 * scale + 60)
    tracer = PollTracer(emu, "f2-flexpipe-").start()
    bound = 700 * scale + 60  # the lognormal's 99.99th percentile is ~560 s
    stack.activate()
    loops, blockings, flex_ids = [], [], []
    for rep in range(plan.reps):
        loops.append(start_loop(emu, ctx, plan.f2_loop_jobs, scale, f"f2-loop-{rep}", 6 * bound))
        blockings.append(_start_blocking(bg.bw, plan.f2_blocking_jobs, f"f2-blocking-{rep}"))
        ids = []
        start = time.monotonic()
        for i in range(plan.f2_flex_jobs):
            pause = start + i / plan.f2_rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            ids.append(api.enqueue(job_text(i), metadata={"bench": f"f2-flexpipe-{rep}"}))
        flex_ids.append(ids)
        ctx.log(f"fig 2 run {rep}: jobs sent")
    every = [i for ids in flex_ids for i in ids]
    wait_until(
        lambda: _terminal(stack.store.status_counts(every)) >= len(every),
        bound,
        1.0,
        "fig 2 flexpipe jobs",
    )
    serial = plan.reps * plan.f2_blocking_jobs / plan.concurrency
    for blocking in blockings:
        blocking.wait(serial * 300 * scale + 60)
    loop_results = [finish_loop(handle, 6 * bound) for handle in loops]
    tracer.stop()
    responses = emu.responses()
    runs: dict[str, list[dict[str, Any]]] = {alt: [] for alt in ALTS}
    for rep in range(plan.reps):
        tags = {alt: f"f2-{alt}-{rep}" for alt in ALTS}
        detected = {
            "flexpipe": _stored_at(stack, responses, tags["flexpipe"]),
            "loop": {d[0]: d[1] for d in loop_results[rep]["done"]},
            "blocking": {d[0]: d[1] for d in blockings[rep].done()},
        }
        for alt in ALTS:
            r = detection_stats(responses, tags[alt], detected[alt], scale)
            runs[alt].append(r)
            ctx.log(
                f"fig 2 run {rep} {alt}: {r['n']:.0f} jobs, GETs/job {r['polls_p50']:.1f} "
                f"(p95 {r['polls_p95']:.1f}), delay {r['delay_p50']:.2f}s "
                f"(p95 {r['delay_p95']:.2f}s), share {100 * r['share_p50']:.1f}% "
                f"(p95 {100 * r['share_p95']:.1f}%)"
            )
    warm = detection_stats(responses, "f2-warmup", _stored_at(stack, responses, "f2-warmup"), scale)
    learned = stack.sql(
        "select count(*), exp(avg(ln(latency_s))), stddev(ln(latency_s)) "
        "from flexpipe_results where latency_s > 0"
    )[0]
    first = tracer.first_get(scale)
    ctx.log(
        f"fig 2: flexpipe's first GET {median(first):.1f} s after create (median, unscaled; "
        f"p5 {percentile(first, 5):.1f}, p95 {percentile(first, 95):.1f}); learned "
        f"{learned[1] / scale:.1f} s, sigma {learned[2]:.2f}"
    )
    return {
        "scale": scale,
        "runs": runs,
        "warmup": warm,
        "first_get": {
            "p5": percentile(first, 5),
            "p50": median(first),
            "p95": percentile(first, 95),
        },
        "learned": {
            "samples": int(learned[0]),
            "median_unscaled": float(learned[1]) / scale,
            "sigma": float(learned[2]),
        },
    }


def _terminal(counts: dict[str, int]) -> int:
    return sum(v for k, v in counts.items() if k in TERMINAL)


class _Blocking:
    def __init__(self, bw: BlockingWorker, n: int, tag: str) -> None:
        import redis

        self.bw, self.n, self.tag = bw, n, tag
        self.key = f"{bw.done_key}:{tag}"
        self.client = redis.Redis.from_url(REDIS_URL)

    def wait(self, timeout: float) -> None:
        wait_until(lambda: self.client.llen(self.key) >= self.n, timeout, 0.2, "blocking jobs")

    def done(self) -> list[list[Any]]:
        try:
            return [json.loads(x) for x in self.client.lrange(self.key, 0, -1)]
        finally:
            self.client.delete(self.key)
            self.client.close()


def _start_blocking(bw: BlockingWorker, n: int, tag: str) -> _Blocking:
    from celery import Celery

    sender = Celery("flexbench-sender", broker=REDIS_URL, set_as_current=False)
    try:
        for text in texts(n):
            sender.send_task("flexbench.blocking_job", args=(text, tag), queue=bw.queue)
    finally:
        sender.close()
    return _Blocking(bw, n, tag)


def _stored_at(
    stack: FlexpipeStack, responses: dict[str, dict[str, Any]], tag: str
) -> dict[str, float]:
    ids = [k for k, v in responses.items() if (v.get("metadata") or {}).get("bench") == tag]
    rows = stack.sql(
        "select response_id, extract(epoch from stored_at) from flexpipe_results "
        "where response_id = any(:ids)",
        ids=ids,
    )
    return {rid: float(at) for rid, at in rows}


def detection_stats(
    responses: dict[str, dict[str, Any]], tag: str, detected: dict[str, float], scale: float
) -> dict[str, float]:
    """GETs per job and detection delay (unscaled s, and as a share of the job's latency)."""
    polls, delays, shares = [], [], []
    for rid, v in responses.items():
        if (v.get("metadata") or {}).get("bench") != tag:
            continue
        polls.append(float(v["polls"]))
        finished, queued = v.get("finished_at"), v.get("queued_at")
        if rid in detected and finished is not None and queued is not None:
            delay = max(0.0, detected[rid] - finished)
            latency = finished - queued
            delays.append(delay / scale)
            if latency > 0:
                shares.append(delay / latency)
    return {
        "n": float(len(polls)),
        "detected": float(len(delays)),
        "polls_p50": median(polls),
        "polls_p95": percentile(polls, 95),
        "delay_p50": median(delays),
        "delay_p95": percentile(delays, 95),
        "share_p50": median(shares),
        "share_p95": percentile(shares, 95),
    }


# -- figure 3: jobs in flight ---------------------------------------------------------------


class Fig3Background:
    """Figure 3's stack and its warm-up jobs, started first: with a long fixed latency the
    warm-up takes minutes on the fixed schedule, and flexpipe must have learned the latency
    before the measured jobs (so it parks each job until the provider is likely done)."""

    def __init__(self, ctx: Ctx) -> None:
        plan = ctx.plan
        self.ctx = ctx
        self.scale = plan.f3_scale
        self.emu = Emulator(
            time_scale=self.scale,
            latency=f"fixed:{plan.f3_latency:g}",
            log_dir=ctx.work_dir,
            name="emulator-f3",
            seed=3,
        ).start(ctx.cleanup)
        self.stack = FlexpipeStack(
            emulator=self.emu,
            work_dir=ctx.work_dir,
            concurrency=plan.concurrency,
            time_scale=self.scale,
            name="f3",
            extra_env={"FLEXPIPE_SWEEP_INTERVAL": "1"},
        ).start(ctx.cleanup, wait=False)  # workers boot in parallel; warm-up waits in Redis
        from flexpipe.tasks import api

        self.stack.activate()
        self.warm_ids = [
            api.enqueue(text, metadata={"bench": "f3-warmup"}) for text in texts(plan.f3_warmup)
        ]
        self.warm_started = time.monotonic()


def pss(sid: int) -> int:
    """Total proportional set size (bytes) of a session: shared pages counted once."""
    total = 0
    for st in all_stats():
        if st.session != sid:
            continue
        try:
            with open(f"/proc/{st.pid}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            continue
    return total


def figure3(ctx: Ctx, bg: Fig3Background) -> dict[str, Any]:
    from flexpipe.tasks import api

    plan = ctx.plan
    stack, emu, scale = bg.stack, bg.emu, bg.scale
    n = plan.f3_jobs
    latency_real = plan.f3_latency * scale
    out: dict[str, Any] = {"jobs": n, "scale": scale, "latency": plan.f3_latency}

    def alternatives() -> None:
        """What the alternatives hold at once with the same workers / their own limit.
        They run beside flexpipe's submissions (they hold a few jobs each and only their
        size is measured, never flexpipe's memory)."""
        local = Cleanup()
        try:
            bw = BlockingWorker(
                emulator=emu, work_dir=ctx.work_dir, concurrency=plan.concurrency,
                time_scale=scale,
            ).start(local)  # fmt: skip
            blocking_run(bw, emu, 200, "f3-blocking", 0, wait=False)
            loop = loop_run(emu, ctx, 1000, scale, "f3-loop", 10.0, sample_rss_at=8.0)
            out["loop"] = {"sent": 1000, "in_flight": _live(emu, "f3-loop"), "rss": loop["rss"]}
            live = _live(emu, "f3-blocking")
            out["blocking"] = {
                "sent": 200,
                "in_flight": live,
                "rss": RssMeter(lambda: [bw.sid]).now(),
            }
            ctx.log(
                f"fig 3 alternatives after 10 s: blocking {live} of 200 in flight, loop "
                f"{out['loop']['in_flight']} of 1000"
            )
        finally:
            local.run()

    ctx.log("fig 3: waiting for the warm-up jobs (flexpipe learns the latency)")
    learned_wait(ctx, stack, bg.warm_ids, 120 * scale + 120)

    stack.ready()
    stack.activate()
    baseline_rss = RssMeter(lambda: [stack.sid]).now()
    baseline_pss = pss(stack.sid)
    out["baseline_rss"], out["baseline_pss"] = baseline_rss, baseline_pss
    out["beat_rss"] = RssMeter(lambda: [stack.beat_sid]).now()
    ctx.log(
        f"fig 3: {n} jobs, provider latency {latency_real:.0f} s real; idle worker RSS "
        f"{baseline_rss / 1e6:.0f} MB (PSS {baseline_pss / 1e6:.0f} MB)"
    )
    sid = stack.sid
    meter = CpuMeter(
        cpu_groups(worker_sid=sid, beat_sid=stack.beat_sid, emulator=emu, database=stack.db_name)
    ).start()
    rss_meter = RssMeter(lambda: [sid], interval=1.0).start()
    poll_queue = _queue_length(f"{stack.queue}.poll")
    t0 = time.time()
    enqueue_many_s = []
    bulk_ids = []
    for start in range(0, n, plan.f3_chunk):
        size = min(plan.f3_chunk, n - start)
        t = time.perf_counter()
        bulk_ids.append(api.enqueue_many(texts(size, start), metadata={"bench": "f3-flexpipe"}))
        enqueue_many_s.append(time.perf_counter() - t)
    out["enqueue_many_s"] = enqueue_many_s
    side = threading.Thread(target=alternatives, name="fig3-alternatives", daemon=True)
    side.start()
    thresholds = [t for t in (10_000, 50_000, 100_000) if t <= n]
    at: dict[int, dict[str, float]] = {}
    samples = []
    peak = 0
    deadline = time.monotonic() + plan.f3_timeout
    last_log = 0.0
    terminal = 0
    progress = (time.monotonic(), 0)
    out["stalled"] = False
    while time.monotonic() < deadline:
        counts = stack.store.status_counts()
        in_flight = counts.get("submitted", 0) + counts.get("in_progress", 0)
        terminal = _terminal(counts) - len(bg.warm_ids)
        rss = RssMeter(lambda: [sid]).now()
        queued = poll_queue()
        peak = max(peak, in_flight)
        if "all_sent_s" not in out and counts.get("pending", 0) == 0:
            # Every job reached the provider: the burst's creates/s after enqueue_many.
            out["all_sent_s"] = time.time() - t0 - sum(enqueue_many_s)
            out["creates_per_s"] = n / max(out["all_sent_s"], 1e-9)
            ctx.log(f"fig 3: all {n} sent {out['all_sent_s']:.0f} s after enqueue_many: "
                    f"{out['creates_per_s']:.0f} creates/s")
        samples.append(
            (time.time() - t0, in_flight, counts.get("pending", 0), terminal, rss, queued)
        )
        if terminal > progress[1]:
            progress = (time.monotonic(), terminal)
        elif (
            time.time() - t0 > latency_real + 60 and time.monotonic() - progress[0] > plan.f3_stall
        ):
            out["stalled"] = True
            ctx.log(f"fig 3: no job stored for {plan.f3_stall:.0f} s: stalled; giving up")
            break
        for th in thresholds:
            if th not in at and in_flight >= th:
                at[th] = {"rss": rss, "pss": pss(stack.sid), "t": time.time() - t0}
        if time.monotonic() - last_log > 30:
            last_log = time.monotonic()
            ctx.log(
                f"fig 3: t={time.time() - t0:.0f}s pending {counts.get('pending', 0)} "
                f"in flight {in_flight} stored {terminal} worker RSS {rss / 1e6:.0f} MB, "
                f"poll queue {queued}"
            )
        if terminal >= n:
            break
        time.sleep(2.0)
    side.join(timeout=120)
    cpu = meter.stop()
    out["peak_rss"] = rss_meter.stop()
    out["elapsed"] = time.time() - t0
    out["cpu"] = cpu
    out["peak_in_flight"] = peak
    out["at"] = {str(k): v for k, v in at.items()}
    out["samples"] = samples[:: max(1, len(samples) // 200)]
    out["stored"] = terminal
    out["poll_seq"] = {
        str(seq): int(count)
        for seq, count in stack.sql(
            "select poll_seq, count(*) from flexpipe_jobs where bulk_id = any(:b) "
            "group by 1 order by 1",
            b=bulk_ids,
        )
    }
    out.update(fig3_checks(stack, emu, n, bulk_ids))
    ctx.log(
        f"fig 3: peak in flight {peak}, stored {out['stored_rows']}/{n} in "
        f"{out['elapsed']:.0f}s, duplicate GETs {out['duplicate_gets']}, "
        f"GETs/job {out['polls_p50']:.1f}, peak RSS {out['peak_rss'] / 1e6:.0f} MB"
    )
    return out


def _queue_length(queue: str) -> Callable[[], int]:
    import redis

    client = redis.Redis.from_url(REDIS_URL)

    def length() -> int:
        try:
            return int(client.llen(queue))
        except redis.RedisError:
            return -1

    return length


def _live(emu: Emulator, tag: str) -> int:
    return sum(1 for v in emu.responses(tag).values() if v.get("status") not in TERMINAL)


def fig3_checks(stack: FlexpipeStack, emu: Emulator, n: int, bulk_ids: list[str]) -> dict[str, Any]:
    """Exactly one create, one results row, and no GET the poll chain did not count."""
    responses = emu.responses("f3-flexpipe")
    rows = stack.sql(
        "select j.response_id, j.poll_count, j.status, "
        "(select count(*) from flexpipe_results r where r.job_id = j.id), "
        "(select count(*) from flexpipe_attempts a where a.job_id = j.id) "
        "from flexpipe_jobs j where j.bulk_id = any(:b)",
        b=bulk_ids,
    )
    by_response = {r[0]: r for r in rows if r[0] is not None}
    duplicate_gets = 0
    jobs_with_duplicates = 0
    for rid, v in responses.items():
        row = by_response.get(rid)
        if row is None:
            continue
        extra = int(v["polls"]) - int(row[1])
        if extra > 0:
            duplicate_gets += extra
            jobs_with_duplicates += 1
    results_rows = [int(r[3]) for r in rows]
    statuses: dict[str, int] = {}
    for r in rows:
        statuses[r[2]] = statuses.get(r[2], 0) + 1
    polls = [float(v["polls"]) for v in responses.values()]
    finished = [v["finished_at"] for v in responses.values() if v.get("finished_at")]
    last_store = stack.sql(
        "select extract(epoch from max(stored_at)) from flexpipe_results r join flexpipe_jobs j "
        "on j.id = r.job_id where j.bulk_id = any(:b)",
        b=bulk_ids,
    )[0][0]
    return {
        "jobs_rows": len(rows),
        "creates": len(responses),
        "unanswered_creates": sum(1 for r in rows if r[0] is None),
        "attempt_rows_over_1": sum(1 for r in rows if int(r[4]) > 1),
        "stored_rows": sum(1 for x in results_rows if x == 1),
        "results_rows_over_1": sum(1 for x in results_rows if x > 1),
        "statuses": statuses,
        "duplicate_gets": duplicate_gets,
        "jobs_with_duplicate_gets": jobs_with_duplicates,
        "polls_p50": median(polls),
        "polls_p95": percentile(polls, 95),
        "polls_total": sum(polls),
        "last_finish": max(finished) if finished else math.nan,
        "last_store": float(last_store) if last_store is not None else math.nan,
    }


# -- figure 4: enqueue cost -----------------------------------------------------------------


def figure4(ctx: Ctx, emu: Emulator) -> dict[str, Any]:
    """``enqueue()`` and ``enqueue_many()`` with Redis + PostgreSQL, no worker consuming."""
    from flexpipe.tasks import api

    plan = ctx.plan
    local = Cleanup()
    try:
        stack = FlexpipeStack(
            emulator=emu,
            work_dir=ctx.work_dir,
            concurrency=plan.concurrency,
            time_scale=1.0,
            name="f4",
        ).start(local, worker=False)
        stack.activate()
        for i in range(50):  # connections and code paths warm
            api.enqueue(job_text(i), metadata={"bench": "f4-warm"})
        runs = []
        for rep in range(plan.reps):
            times = []
            for i in range(plan.f4_calls):
                text = job_text(rep * plan.f4_calls + i)
                t = time.perf_counter()
                api.enqueue(text, metadata={"bench": "f4"})
                times.append(time.perf_counter() - t)
            batch = texts(plan.f4_bulk)
            t = time.perf_counter()
            api.enqueue_many(batch, metadata={"bench": "f4-bulk"})
            bulk_s = time.perf_counter() - t
            r = {
                "p50": median(times),
                "p99": percentile(times, 99),
                "max": max(times),
                "bulk_s": bulk_s,
            }
            runs.append(r)
            ctx.log(
                f"fig 4 rep {rep}: enqueue p50 {r['p50'] * 1000:.2f} ms, p99 "
                f"{r['p99'] * 1000:.2f} ms; enqueue_many({plan.f4_bulk}) {bulk_s:.2f} s"
            )
        return {"calls": plan.f4_calls, "bulk": plan.f4_bulk, "runs": runs}
    finally:
        local.run()


def profile_enqueue(ctx: Ctx, emu: Emulator, out: Path) -> None:
    """cProfile of ``enqueue()`` calls (for the notes on what limits figure 4)."""
    import cProfile
    import pstats

    from flexpipe.tasks import api

    local = Cleanup()
    try:
        stack = FlexpipeStack(
            emulator=emu, work_dir=ctx.work_dir, concurrency=1, time_scale=1.0, name="f4p"
        ).start(local, worker=False)
        stack.activate()
        for i in range(50):
            api.enqueue(job_text(i))
        prof = cProfile.Profile()
        prof.enable()
        for i in range(500):
            api.enqueue(job_text(i))
        prof.disable()
        with open(out, "w") as fh:
            pstats.Stats(prof, stream=fh).sort_stats("cumulative").print_stats(40)
    finally:
        local.run()
