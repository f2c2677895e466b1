"""Where flexpipe's worker CPU goes: py-spy on every worker process during a figure-1 batch.

    python -m benchmarks.profile [--jobs 2000] [--duration 12] [--enqueue]

Needs ``py-spy`` (``.venv/bin/pip install py-spy``). Starts the figure-1 set-up (emulator
with instant latency, a flexpipe worker with beat on Redis + a fresh PostgreSQL database),
enqueues a bulk of jobs, records each worker process with ``py-spy record --format raw``
(non-blocking, 200 Hz, ``--gil``: only samples that hold the GIL, so waits on PostgreSQL, Redis
or HTTP do not count), then prints, per process, its CPU time,
the share of samples by what the process was doing, and the top functions. ``--enqueue``
also runs cProfile over 500 ``enqueue()`` calls (figure 4).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from benchmarks.figure1 import F1_ENV
from benchmarks.figure4 import profile_enqueue
from benchmarks.procs import read_stat, session_pids
from benchmarks.runs import Ctx, Plan, texts, wait_until
from benchmarks.services import ROOT, Cleanup, Emulator, FlexpipeStack

#: First match wins, scanning a sample's frames from the root to the leaf.
CATEGORIES = [
    ("provider call (pipeline/client.py: openai SDK, httpx)", "pipeline/client.py"),
    ("SQL (pipeline/store/: SQLAlchemy, psycopg)", "pipeline/store/"),
    ("publish next task (apply_async)", "apply_async"),
    ("sweeper", "tasks/sweeper.py"),
    ("flow logic (pipeline/flow.py, other)", "pipeline/flow.py"),
]


def categorise(frames: list[str]) -> str:
    for label, needle in CATEGORIES:
        if any(needle in f for f in frames):
            return label
    joined = ";".join(frames)
    if "celery" in joined or "kombu" in joined or "billiard" in joined:
        return "Celery/kombu machinery (receive, dispatch, ack, events, pool IPC)"
    return "other"


def parse_raw(path: Path) -> tuple[Counter[str], Counter[str], Counter[str], int]:
    """Samples by category, by flexpipe function (inclusive) and by leaf package (self)."""
    cats: Counter[str] = Counter()
    funcs: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if "(" in f and not f.startswith("process ")]
        frames = [f for f in frames if not f.startswith("thread ")]
        total += n
        cats[categorise(frames)] += n
        seen = set()
        for f in frames:  # inclusive time per flexpipe function
            where = f.rsplit(" (", 1)[-1]
            if not any(p in where for p in ("pipeline/", "tasks/", "config/")):
                continue
            name = f.split(" (")[0] + " (" + "/".join(where.split("/")[-2:])
            if name not in seen:
                funcs[name] += n
                seen.add(name)
        if frames:
            leaves[_package(frames[-1])] += n
    return cats, funcs, leaves, total


def _package(frame: str) -> str:
    """``site-packages/sqlalchemy/engine/base.py:12`` -> ``sqlalchemy``; stdlib -> module."""
    where = frame.rsplit(" (", 1)[-1].rstrip(")")
    if "site-packages/" in where:
        return where.split("site-packages/", 1)[1].split("/", 1)[0]
    if "/tmp/" in where or "/work/" in where:
        return "flexpipe: " + "/".join(where.split("/")[-2:]).split(":")[0]
    return "stdlib: " + where.split("/")[-1].split(":")[0]


def _cpu(pid: int) -> float:
    st = read_stat(pid)
    return st.cpu_s if st else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile")
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--duration", type=int, default=12)
    parser.add_argument("--enqueue", action="store_true")
    args = parser.parse_args()
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(pyspy).exists():
        print("py-spy not found: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    plan = Plan.make(quick=True)
    work = Path(tempfile.mkdtemp(prefix="profile-", dir=ROOT / ".flexpipe"))
    cleanup = Cleanup()
    try:
        emu = Emulator(
            time_scale=plan.f1_scale, latency="fixed:0", log_dir=work, name="emulator"
        ).start(cleanup)
        stack = FlexpipeStack(
            emulator=emu,
            work_dir=work,
            concurrency=plan.concurrency,
            time_scale=plan.f1_scale,
            name="profile",
            extra_env=F1_ENV,
        ).start(cleanup)
        from flexpipe.tasks import api

        stack.activate()
        warm = api.enqueue_many(texts(40))
        wait_until(lambda: (b := stack.store.get_bulk(warm)) is not None and b.done >= 40, 60)
        pids = session_pids(stack.sid)
        bulk = api.enqueue_many(texts(args.jobs), metadata={"bench": "profile"})
        time.sleep(1.0)
        cpu0 = {pid: _cpu(pid) for pid in pids}
        spies = []
        for pid in pids:
            out = work / f"pyspy-{pid}.txt"
            spies.append((pid, out, subprocess.Popen(
                [pyspy, "record", "--pid", str(pid), "--duration", str(args.duration),
                 "--rate", "200", "--nonblocking", "--gil", "--full-filenames", "--format", "raw",
                 "--output", str(out)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )))  # fmt: skip
        for _, _, spy in spies:
            spy.wait(timeout=args.duration + 60)
        cpu = {pid: _cpu(pid) - cpu0[pid] for pid in pids}
        n_done = stack.store.get_bulk(bulk)
        print(f"jobs stored so far: {n_done.done if n_done else '?'} of {args.jobs}\n")
        for pid, out, _ in spies:
            if not out.exists():
                continue
            cats, funcs, leaves, total = parse_raw(out)
            role = "worker main process" if pid == stack.sid else f"child of {stack.sid}"
            cpu_s = total / 200
            print(f"== pid {pid} {role}: {total} samples = {cpu_s:.1f} s active (py-spy); "
                  f"{cpu[pid]:.1f} s CPU (/proc) in {args.duration} s")  # fmt: skip
            for label, n in cats.most_common():
                print(f"  {100 * n / max(1, total):5.1f}%  {label}")
            print("  flexpipe functions (inclusive):")
            for name, n in funcs.most_common(18):
                print(f"    {100 * n / max(1, total):5.1f}%  {name}")
            print("  where the CPU is spent (leaf frame's package, self time):")
            for name, n in leaves.most_common(12):
                print(f"    {100 * n / max(1, total):5.1f}%  {name}")
            print()
        if args.enqueue:
            out = work / "enqueue-cprofile.txt"
            profile_enqueue(Ctx(plan, work, cleanup), emu, out)
            print(out.read_text()[:6000])
        print(f"raw profiles in {work}")
    finally:
        cleanup.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
