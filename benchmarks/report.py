"""The results table (printed, and written into ``BENCHMARKS.md``) and the machine facts."""

from __future__ import annotations

import datetime as dt
import math
import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.services import ROOT
from benchmarks.stats import median

MB = 1e6
HEADER = ("figure", "flexpipe", "loop", "blocking task", "target", "met/missed")


def machine() -> dict[str, str]:
    cpu = "?"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GB"
                break
    versions = {"python": platform.python_version()}
    for pkg in ("celery", "kombu", "redis", "openai", "SQLAlchemy", "psycopg", "aiohttp"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "?"
    versions["redis-server"] = _redis_server_version()
    versions["postgresql"] = _postgres_version()
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "ram": mem,
        "kernel": platform.release(),
        "versions": ", ".join(f"{k} {v}" for k, v in versions.items()),
        "commit": _git_commit(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _redis_server_version() -> str:
    import redis

    from benchmarks.services import REDIS_URL

    try:
        client = redis.Redis.from_url(REDIS_URL)
        try:
            return str(client.info("server").get("redis_version", "?"))
        finally:
            client.close()
    except Exception:
        return "?"


def _postgres_version() -> str:
    import sqlalchemy as sa

    from benchmarks.services import POSTGRES_ADMIN_URL

    try:
        engine = sa.create_engine(POSTGRES_ADMIN_URL)
        with engine.connect() as conn:
            version = str(conn.execute(sa.text("show server_version")).scalar())
        engine.dispose()
        return version.split()[0]
    except Exception:
        return "?"


def _git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "pipeline", "tasks", "config")
    except (OSError, subprocess.SubprocessError):
        return "?"
    if not commit:
        return os.environ.get("BENCH_SOURCE", "(not a git checkout)")
    return commit + (" + uncommitted changes in pipeline/tasks/config" if dirty else "")


# -- the table -------------------------------------------------------------------------------


def _ms(x: float) -> str:
    return "—" if math.isnan(x) else f"{x:.2f}"


def _status(ok: bool | None) -> str:
    return "—" if ok is None else ("met" if ok else "**missed**")


def rows(results: dict[str, Any]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    f1 = results.get("fig1")
    if f1:
        runs = f1["runs"]
        n = f1["jobs"]
        rate = {alt: median([r["rate"] for r in runs[alt]]) for alt in runs}
        ratios = [
            f["rate"] / lp["rate"] for f, lp in zip(runs["flexpipe"], runs["loop"], strict=True)
        ]
        ratio = median(ratios)
        out.append((
            f"1. jobs/s, instant provider ({n} jobs; flexpipe: stored)",
            f"{rate['flexpipe']:.0f} ({ratio:.2f}x loop)",
            f"{rate['loop']:.0f}",
            f"{rate['blocking']:.0f}",
            "flexpipe ≥ 0.6x loop",
            _status(ratio >= 0.6),
        ))  # fmt: skip
        groups = [
            ("workers (loop: its process)", {"flexpipe": "workers", "loop": "loop",
                                             "blocking": "workers"}),
            ("emulator", {a: "emulator" for a in runs}),
            ("redis-server", {a: "redis" for a in runs}),
            ("PostgreSQL (our database's backends + shared)", {"flexpipe": "postgres"}),
            ("app process (enqueue_many / send_task)", {"flexpipe": "app", "blocking": "app"}),
        ]  # fmt: skip
        totals: dict[str, float] = {a: 0.0 for a in runs}
        for label, keys in groups:
            cells = []
            for alt in ("flexpipe", "loop", "blocking"):
                key = keys.get(alt)
                if key is None:
                    cells.append("—")
                    continue
                v = median([r["cpu"].get(key, math.nan) * 1000 / n for r in runs[alt]])
                totals[alt] += 0 if math.isnan(v) else v
                cells.append(_ms(v))
            out.append((f"1. CPU ms/job: {label}", *cells, "(reported)", "—"))
        out.append((
            "1. CPU ms/job: total",
            *(_ms(totals[a]) for a in ("flexpipe", "loop", "blocking")),
            "(reported)",
            "—",
        ))  # fmt: skip
    f2 = results.get("fig2")
    if f2:
        runs = f2["runs"]

        def med(alt: str, key: str) -> float:
            return median([r[key] for r in runs[alt]])

        polls = {a: (med(a, "polls_p50"), med(a, "polls_p95")) for a in runs}
        delay = {a: (med(a, "delay_p50"), med(a, "delay_p95")) for a in runs}
        share = {a: (med(a, "share_p50"), med(a, "share_p95")) for a in runs}
        out.append((
            "2. GETs per job, median (p95); lognormal 60 s, sigma 0.6",
            *(f"{polls[a][0]:.1f} ({polls[a][1]:.1f})" for a in ("flexpipe", "loop", "blocking")),
            "median ≤ 6",
            _status(polls["flexpipe"][0] <= 6),
        ))  # fmt: skip
        out.append((
            "2. detection delay, median (p95), unscaled s",
            *(f"{delay[a][0]:.1f} ({delay[a][1]:.1f})" for a in ("flexpipe", "loop", "blocking")),
            "(reported)",
            "—",
        ))  # fmt: skip
        out.append((
            "2. detection delay / job latency, median (p95)",
            *(f"{100 * share[a][0]:.1f}% ({100 * share[a][1]:.1f}%)"
              for a in ("flexpipe", "loop", "blocking")),
            "median ≤ 10%",
            _status(share["flexpipe"][0] <= 0.10),
        ))  # fmt: skip
        both = polls["flexpipe"][0] <= 6 and share["flexpipe"][0] <= 0.10
        out.append(("2. both at once (flexpipe)", "", "", "", "≤ 6 GETs and ≤ 10%", _status(both)))
    f3 = results.get("fig3")
    if f3:
        n = f3["jobs"]
        at = f3["at"]
        rss_cells = []
        rss_ok = True
        for th in ("10000", "50000", "100000"):
            if int(th) > n:
                continue
            if th in at:
                rss_cells.append(f"{at[th]['rss'] / MB:.0f}")
                rss_ok = rss_ok and at[th]["rss"] <= 400 * MB
            else:
                rss_cells.append("never reached")
                rss_ok = False
        # The whole run counts too: the pool processes grow while the backlog drains.
        peak = f3.get("peak_rss", 0)
        rss_ok = rss_ok and peak <= 400 * MB
        labels = "/".join(f"{int(t) // 1000}k" for t in ("10000", "50000", "100000") if int(t) <= n)
        pss_cells = "/".join(
            f"{at[t]['pss'] / MB:.0f}" if t in at else "—"
            for t in ("10000", "50000", "100000")
            if int(t) <= n
        )
        out.append((
            f"3. jobs in flight at once ({n:,} sent)",
            f"{f3['peak_in_flight']:,}",
            f"{f3['loop']['in_flight']} (its concurrency)",
            f"{f3['blocking']['in_flight']} (= worker concurrency)",
            f"{n:,}",
            _status(f3["peak_in_flight"] >= n),
        ))  # fmt: skip
        out.append((
            f"3. worker RSS sum at {labels} in flight (and the run's peak), MB",
            " / ".join(rss_cells)
            + f" (peak {peak / MB:.0f}; idle {f3['baseline_rss'] / MB:.0f}; PSS {pss_cells}; "
            + f"beat process apart: {f3.get('beat_rss', 0) / MB:.0f})",
            f"{f3['loop']['rss'] / MB:.0f} (64 in flight)",
            f"{f3['blocking']['rss'] / MB:.0f} ({f3['blocking']['in_flight']} in flight)",
            "≤ 400 MB",
            _status(rss_ok),
        ))  # fmt: skip
        dup_ok = (
            f3["duplicate_gets"] == 0
            and f3["results_rows_over_1"] == 0
            and f3["attempt_rows_over_1"] == 0
            and f3["creates"] == n
        )
        out.append((
            "3. duplicate GETs / duplicate stores / creates per job",
            f"{f3['duplicate_gets']} / {f3['results_rows_over_1']} / "
            f"{f3['creates'] / max(1, f3['jobs_rows']):.2f}",
            "—",
            "—",
            "0 / 0 / 1.00",
            _status(dup_ok),
        ))  # fmt: skip
        stored = f"{f3['stored_rows']:,}/{n:,} in {f3['elapsed']:.0f} s"
        if f3.get("stalled"):
            queued = max((s[5] for s in f3.get("samples", []) if len(s) > 5), default=-1)
            stored = (
                f"{f3['stored_rows']:,}/{n:,}: stalled (none stored for "
                f"{results['plan']['f3_stall']:.0f} s; poll queue up to {queued:,})"
            )
        out.append((
            "3. all stored (GETs/job median, p95)",
            f"{stored} ({f3['polls_p50']:.0f}, {f3['polls_p95']:.0f})",
            "—",
            "—",
            "all",
            _status(f3["stored_rows"] >= n),
        ))  # fmt: skip
    f4 = results.get("fig4")
    if f4:
        runs = f4["runs"]
        p50 = median([r["p50"] for r in runs]) * 1000
        p99 = median([r["p99"] for r in runs]) * 1000
        bulk = median([r["bulk_s"] for r in runs])
        out.append((
            f"4. enqueue() p50 / p99 ({f4['calls']} calls x {len(runs)})",
            f"{p50:.2f} / {p99:.2f} ms",
            "n/a",
            "n/a",
            "p99 ≤ 5 ms",
            _status(p99 <= 5),
        ))  # fmt: skip
        out.append((
            f"4. enqueue_many({f4['bulk']:,})",
            f"{bulk:.2f} s",
            "n/a",
            "n/a",
            "≤ 2 s",
            _status(bulk <= 2),
        ))  # fmt: skip
    return out


def text_table(table: list[tuple[str, ...]]) -> str:
    widths = [max(len(str(r[i])) for r in [HEADER, *table]) for i in range(len(HEADER))]
    lines = [" | ".join(str(c).ljust(w) for c, w in zip(HEADER, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    for r in table:
        lines.append(" | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))
    return "\n".join(lines)


def markdown_table(table: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in table:
        lines.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(lines)


def section(results: dict[str, Any], quick: bool) -> str:
    m = results["machine"]
    plan = results["plan"]
    command = (
        "make bench-quick  # python -m benchmarks --quick"
        if quick
        else ("make bench  # python -m benchmarks")
    )
    title = "quick run" if quick else "full run"
    f1 = plan["f1_scale"]
    f2 = plan["f2_scale"]
    f3 = plan["f3_scale"]
    lat3 = plan["f3_latency"]
    name = title.split()[0]
    return f"""<!-- bench-{name}:start (python -m benchmarks writes this part) -->
### Measured: {title}

```sh
{command}
```

Machine: {m["nproc"]} CPUs ({m["cpu"]}), {m["ram"]} RAM, Linux {m["kernel"]}; shared and
noisy. Versions: {m["versions"]}. flexpipe commit {m["commit"]}. Date: {m["date"]}.
Took {results["took_s"] / 60:.1f} min.

{markdown_table(rows(results))}

Each figure's number is the median of {plan["reps"]} runs (figure 3: one run); ratios are
taken within one run. flexpipe ran as a real `celery worker` with {plan["concurrency"]} pool
processes and a `flexpipe beat` process beside it (the sweeper every 1 s; CPU counts both,
RSS is the worker's) on Redis and a fresh PostgreSQL database per figure; the
blocking task ran on a worker with the same concurrency; the loop is one process with 64 jobs
at a time. Time scales (emulator and `FLEXPIPE_TIME_SCALE` alike; figures are unscaled):
1: {f1:g} ({plan["f1_jobs"]} jobs per alternative per run), 2: {f2:g}
({plan["f2_flex_jobs"]} flexpipe jobs at {plan["f2_rate"]:g}/s after {plan["f2_warmup"]} warm-up
jobs, {plan["f2_loop_jobs"]} loop jobs, {plan["f2_blocking_jobs"]} blocking jobs per run),
3: {f3:g} (provider latency fixed {lat3:g} s = {lat3 * f3:.0f} s real, after
{plan["f3_warmup"]} warm-up jobs).
<!-- bench-{name}:end -->"""


def write_markdown(path: Path, results: dict[str, Any], quick: bool) -> None:
    """Replace (or append) this mode's generated section; the rest of the file is kept."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    new = section(results, quick)
    name = "quick" if quick else "full"
    pattern = re.compile(rf"<!-- bench-{name}:start.*?<!-- bench-{name}:end -->", re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: new, text)
    else:
        text = text.rstrip("\n") + "\n\n" + new + "\n"
    path.write_text(text)
