"""A burst on its own: ``python -m benchmarks.burst --jobs 100000``.

``enqueue_many`` of N jobs on Redis + PostgreSQL with the real worker, then the time until
the emulator has received N creates: creates/s at provider speed. Polls are kept out of
the way (the first poll is due long after the burst), so only the submit path is
measured. Figure 3 runs the same burst with its polls; this one is quicker to run alone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.services import Cleanup, Emulator, FlexpipeStack


def run(jobs: int, concurrency: int, chunk: int, work_dir: Path) -> dict[str, float]:
    from flexpipe.tasks import api

    cleanup = Cleanup()
    try:
        emu = Emulator(
            time_scale=1, latency="fixed:3600", log_dir=work_dir, name="emulator-burst", seed=5
        ).start(cleanup)
        stack = FlexpipeStack(
            emulator=emu,
            work_dir=work_dir,
            concurrency=concurrency,
            time_scale=1,
            name="burst",
            extra_env={"FLEXPIPE_POLL_FIRST_DELAY": "3000", "FLEXPIPE_LEARN_LATENCY": "false"},
        ).start(cleanup)
        stack.activate()
        before = int(emu.totals().get("creates", 0))
        texts = [f"Burst document {i}: the tram timetable changes in May." for i in range(jobs)]
        t0 = time.monotonic()
        for start in range(0, jobs, chunk):
            api.enqueue_many(texts[start : start + chunk], metadata={"bench": "burst"})
        enqueued = time.monotonic() - t0
        last, stalled_since = before, time.monotonic()
        while True:
            creates = int(emu.totals().get("creates", 0)) - before
            if creates >= jobs:
                break
            if creates > last:
                last, stalled_since = creates, time.monotonic()
            elif time.monotonic() - stalled_since > 60:
                raise RuntimeError(f"stalled at {creates} creates; see {stack.log_path}")
            time.sleep(0.2)
        elapsed = time.monotonic() - t0
        responses = emu.responses("burst")
        return {
            "jobs": jobs,
            "concurrency": concurrency,
            "enqueue_many_s": round(enqueued, 2),
            "all_created_s": round(elapsed, 2),
            "creates_per_s": round(jobs / elapsed, 1),
            "creates_per_s_after_enqueue": round(jobs / max(elapsed - enqueued, 1e-9), 1),
            "creates": len(responses),
        }
    finally:
        cleanup.run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--chunk", type=int, default=10_000, help="jobs per enqueue_many")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flexpipe-burst-") as tmp:
        result = run(args.jobs, args.concurrency, args.chunk, Path(tmp))
    json.dump(result, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
