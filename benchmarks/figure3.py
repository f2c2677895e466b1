"""Figure 3: many jobs in flight at once: memory, CPU, queue length and correctness."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

from benchmarks.procs import (
    CpuMeter,
    RssMeter,
    all_stats,
)
from benchmarks.runs import (
    TERMINAL,
    Ctx,
    blocking_run,
    cpu_groups,
    learned_wait,
    loop_run,
    terminal_count,
    texts,
)
from benchmarks.services import (
    REDIS_URL,
    BlockingWorker,
    Cleanup,
    Emulator,
    FlexpipeStack,
)
from benchmarks.stats import median, percentile


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
        terminal = terminal_count(counts) - len(bg.warm_ids)
        rss = RssMeter(lambda: [sid]).now()
        queued = poll_queue()
        peak = max(peak, in_flight)
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
