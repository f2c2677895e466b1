"""``python -m benchmarks [--quick]``: run every figure, print the table, update BENCHMARKS.md.

Order: the stacks of figures 3 and 2 start first (their flexpipe must learn the provider's
latency from finished warm-up jobs, which takes a while on the fixed schedule), then
figure 1, 4, 2 and 3 run one after another. Every process and database started is
stopped or dropped at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import figure1, figure2, figure3, figure4, report
from benchmarks.runs import Ctx, Plan
from benchmarks.services import ROOT, Cleanup, Emulator, delete_redis_keys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller run (10k in flight)")
    parser.add_argument(
        "--only",
        default="1,2,3,4",
        help="comma-separated figures to run (default all; BENCHMARKS.md is written only "
        "for a run of all four)",
    )
    parser.add_argument(
        "--no-write", action="store_true", help="print the table, leave BENCHMARKS.md alone"
    )
    args = parser.parse_args(argv)
    only = {int(x) for x in args.only.split(",") if x.strip()}
    plan = Plan.make(args.quick)
    base = ROOT / ".flexpipe" / "bench"
    base.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=base))
    cleanup = Cleanup()
    ctx = Ctx(plan, work_dir, cleanup)
    # SIGTERM (e.g. a timeout) unwinds like Ctrl-C, so the clean-up below runs.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    results: dict[str, Any] = {"plan": dataclasses.asdict(plan), "machine": report.machine()}
    started = time.monotonic()
    ctx.log(f"{'quick' if plan.quick else 'full'} run; logs in {work_dir}")
    cleanup.push(
        "our Redis keys", lambda: delete_redis_keys("flexbench", "_kombu.binding_deadlines")
    )

    def save(name: str, value: Any) -> None:
        results[name] = value
        results["took_s"] = time.monotonic() - started
        (work_dir / "results.json").write_text(json.dumps(results, indent=1, default=str))

    status = 0
    try:
        # Figures 1 (CPU per job) and 4 (enqueue p99) run first, with nothing else on the
        # machine. Then the stacks of figures 3 and 2 boot and start their warm-up jobs:
        # figure 3's warm-up (a minute of provider latency) runs during figure 2.
        if 1 in only:
            save("fig1", figure1.figure1(ctx))
        if 4 in only:
            emu = Emulator(
                time_scale=1.0, latency="fixed:0", log_dir=work_dir, name="emulator-f4"
            ).start(cleanup)
            save("fig4", figure4.figure4(ctx, emu))
        bg3 = figure3.Fig3Background(ctx) if 3 in only else None
        bg2 = figure2.Fig2Background(ctx) if 2 in only else None
        if bg2 is not None:
            save("fig2", figure2.figure2(ctx, bg2))
            bg2.stop()  # its workers would only take CPU from figure 3
        if bg3 is not None:
            save("fig3", figure3.figure3(ctx, bg3))
    except KeyboardInterrupt:
        ctx.log("interrupted")
        status = 130
    except Exception as exc:
        ctx.log(f"failed: {exc!r}")
        status = 1
        import traceback

        traceback.print_exc()
    finally:
        ctx.log("cleaning up")
        cleanup.run()
    table = report.rows(results)
    print()
    print(report.text_table(table))
    print(f"\nraw results: {work_dir / 'results.json'}")
    if status:
        return status
    if only == {1, 2, 3, 4} and not args.no_write:
        report.write_markdown(ROOT / "BENCHMARKS.md", results, plan.quick)
        print("BENCHMARKS.md updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
