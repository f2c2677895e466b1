"""Figure 1: overhead, the worker CPU each alternative spends per job."""

from __future__ import annotations

import math
import time
from typing import Any

from benchmarks.procs import (
    CpuMeter,
)
from benchmarks.runs import (
    ALTS,
    Ctx,
    blocking_run,
    cpu_groups,
    fmt_cpu,
    loop_run,
    texts,
    wait_until,
)
from benchmarks.services import (
    BlockingWorker,
    Cleanup,
    Emulator,
    FlexpipeStack,
)
from benchmarks.stats import median

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


def polls_per_job(emu: Emulator, tag: str) -> float:
    items = emu.responses(tag)
    return median([float(v["polls"]) for v in items.values()]) if items else math.nan


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
