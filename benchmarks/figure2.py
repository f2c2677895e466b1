"""Figure 2: polls per job and detection delay (how soon a finished job is seen)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from benchmarks.loop import job_text
from benchmarks.runs import (
    ALTS,
    Ctx,
    finish_loop,
    learned_wait,
    start_loop,
    terminal_count,
    texts,
    wait_until,
)
from benchmarks.services import (
    REDIS_URL,
    BlockingWorker,
    Emulator,
    FlexpipeStack,
)
from benchmarks.stats import median, percentile


class PollTracer:
    """When each GET of the responses tagged ``prefix...`` happened (to ``interval``): a
    thread reads ``/_emulator/stats`` and notes when a response's ``polls`` count grows."""

    def __init__(self, emu: Emulator, prefix: str, interval: float = 0.25) -> None:

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
        lambda: terminal_count(stack.store.status_counts(every)) >= len(every),
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
