"""``flexpipe demo``: the whole flow on embedded defaults, in well under a minute.

Starts the bundled emulator and a worker (with the sweeper) on SQLite and the filesystem
broker in a folder of its own, enqueues the bundled sample documents for summarisation,
shows progress from SQL, then prints a table of the stored results.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from flexpipe.cli.group import cli
from flexpipe.cli.services import worker_command

#: Emulator and flexpipe run 20x faster than real time: a 60 s flex wait takes 3 s.
TIME_SCALE = 0.05
INSTRUCTIONS = "Summarise this document in two or three sentences for a busy reader."


def sample_documents() -> list[tuple[str, str]]:
    """The bundled sample documents as ``(name, text)``, in file-name order.

    Read through :mod:`importlib.resources`, so they load from a wheel, a zip or a checkout.
    """
    found = [f for f in resources.files("flexpipe.samples").iterdir() if f.name.endswith(".txt")]
    return [
        (f.name.removesuffix(".txt"), f.read_text(encoding="utf-8"))
        for f in sorted(found, key=lambda f: f.name)
    ]


def run_demo(folder: Path, *, timeout: float = 50.0) -> int:
    from flexpipe.emulator import EmulatorConfig, run_in_thread

    console = Console(markup=False, highlight=False)  # stored outputs print literally
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    documents = sample_documents()
    if not documents:
        console.print("no sample documents in flexpipe.samples", style="red")
        return 2

    emulator = run_in_thread(EmulatorConfig(time_scale=TIME_SCALE, slots=12, seed=7))
    os.environ.update(
        {
            "FLEXPIPE_DATA_DIR": str(folder),
            "FLEXPIPE_DATABASE_URL": f"sqlite:///{folder / 'flexpipe.db'}",
            "FLEXPIPE_BROKER_URL": "filesystem://",
            "FLEXPIPE_API_BASE_URL": emulator.base_url,
            "FLEXPIPE_API_KEY": "demo",
            "FLEXPIPE_TIME_SCALE": str(TIME_SCALE),
        }
    )
    from flexpipe.config.settings import configure, get_settings

    configure()
    from flexpipe.migrations import upgrade
    from flexpipe.tasks import api
    from flexpipe.tasks.runtime import reset, runtime

    reset()
    settings = get_settings()
    upgrade(settings.db_url)
    log_path = folder / "worker.log"
    console.print(
        f"flexpipe demo: emulator at {emulator.base_url}, database {settings.db_url}, "
        f"worker log {log_path}",
        highlight=False,
    )
    with open(log_path, "w") as log_file:
        worker = subprocess.Popen(
            worker_command(beat=True, concurrency=2, loglevel="warning"),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
        )
    try:
        ids = [
            api.enqueue(text, instructions=INSTRUCTIONS, metadata={"doc": name})
            for name, text in documents
        ]
        finished = _progress(console, ids, timeout)
        _table(console, ids, [name for name, _ in documents])
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=15)
        except subprocess.TimeoutExpired:
            worker.kill()
        emulator.stop()
        runtime().store.dispose()
    if not finished:
        console.print(f"not every job finished within {timeout:g}s; see {log_path}", style="red")
        return 1
    return 0


def _progress(console: Console, ids: list[str], timeout: float) -> bool:
    from flexpipe.tasks.runtime import runtime

    store = runtime().store
    terminal = {"completed", "failed", "cancelled", "incomplete", "expired"}
    end = time.monotonic() + timeout
    columns = (
        TextColumn("summarising", style="bold"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("jobs", total=len(ids), detail="")
        while True:
            counts = store.status_counts(ids)
            done = sum(n for status, n in counts.items() if status in terminal)
            detail = "  ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            progress.update(task, completed=done, detail=detail)
            if done == len(ids):
                return True
            if time.monotonic() > end:
                return False
            time.sleep(0.2)


def _table(console: Console, ids: list[str], names: list[str]) -> None:
    from flexpipe.tasks import api

    table = Table("job", "document", "status", "tokens", "latency", "summary")
    room = max(16, console.width - 66)
    for job_id, name in zip(ids, names, strict=True):
        view = api.get(job_id)
        res = view.result
        latency = "-"
        if view.job.finished_at is not None:
            latency = f"{(view.job.finished_at - view.job.created_at).total_seconds():.1f}s"
        tokens = "-" if res is None else str(res.usage.total_tokens)
        text = (res.output_text or "") if res else (view.error or "")
        first_line = text.strip().splitlines()[0] if text.strip() else ""
        if len(first_line) > room:
            first_line = first_line[: room - 1] + "…"
        table.add_row(job_id[:8], name[:20], view.status.value, tokens, latency, first_line)
    console.print(table)


@cli.command()
@click.option("--keep", is_flag=True, help="Keep the demo's data folder from the last run.")
def demo(keep: bool) -> None:
    """Run the whole flow on embedded defaults: emulator, SQLite, filesystem broker."""
    if not keep:
        shutil.rmtree(Path(".flexpipe/demo"), ignore_errors=True)
    sys.exit(run_demo(Path(".flexpipe/demo")))
