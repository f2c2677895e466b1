"""Figure 4: enqueue cost, ``enqueue()`` and ``enqueue_many()`` with no worker consuming
(and the cProfile of it that ``benchmarks.profile`` writes)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from benchmarks.loop import job_text
from benchmarks.runs import (
    Ctx,
    texts,
)
from benchmarks.services import (
    Cleanup,
    Emulator,
    FlexpipeStack,
)
from benchmarks.stats import median, percentile


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
