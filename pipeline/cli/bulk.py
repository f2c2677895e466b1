"""``flexpipe bulk ...``, ``classify`` and ``summarize``: many jobs from a JSONL or CSV file."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from flexpipe.cli.group import cli, console, err_console, fail, timestamp
from flexpipe.cli.rows import MAX_LINE_BYTES


@cli.group()
def bulk() -> None:
    """Bulk jobs: progress and waiting."""


@bulk.command("status")
@click.argument("bulk_id")
def bulk_status(bulk_id: str) -> None:
    """Show a bulk job's counters."""
    from flexpipe.tasks import api

    b = api.get_bulk(bulk_id)
    table = Table(
        "bulk",
        "name",
        "total",
        "pending",
        "in flight",
        "completed",
        "failed",
        "incomplete",
        "cancelled",
        "expired",
        "finished",
    )
    table.add_row(
        b.id,
        b.name or "-",
        str(b.total),
        str(b.pending),
        str(b.in_flight),
        str(b.completed),
        str(b.failed),
        str(b.incomplete),
        str(b.cancelled),
        str(b.expired),
        timestamp(b.finished_at),
    )
    console.print(table)


@bulk.command("wait")
@click.argument("bulk_id")
@click.option("--timeout", default=3600.0, show_default=True, help="Give up after this long.")
def bulk_wait(bulk_id: str, timeout: float) -> None:
    """Wait for a bulk job with a live progress bar and an ETA."""
    b = _wait_with_progress(bulk_id, timeout)
    console.print(
        f"{b.completed} completed, {b.failed} failed, {b.incomplete} incomplete, "
        f"{b.cancelled} cancelled, {b.expired} expired",
    )


# -- classify and summarize files (flexpipe.tasks.bulk, flexpipe.cli.rows) -------------------


def _bulk_file_options(command: Any) -> Any:
    """The options ``classify`` and ``summarize`` share."""
    options = [
        click.option(
            "--field",
            default="text",
            show_default=True,
            help="The JSONL key or CSV column that holds the text.",
        ),
        click.option(
            "--output",
            "-o",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Write the rows to this .jsonl or .csv file (default: JSON Lines on stdout).",
        ),
        click.option("--model", help="Model name (default: FLEXPIPE_MODEL)."),
        click.option("--name", help="Name of the bulk job (default: the file's name)."),
        click.option(
            "--wait/--no-wait",
            default=True,
            show_default=True,
            help="Wait with a progress bar, then write the rows; --no-wait prints the bulk id.",
        ),
        click.option("--timeout", default=3600.0, show_default=True, help="Seconds to wait."),
        click.option(
            "--max-line-bytes",
            type=click.IntRange(min=1),
            default=MAX_LINE_BYTES,
            show_default=True,
            envvar="FLEXPIPE_MAX_LINE_BYTES",
            help="A longer line is an error naming its line number.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@cli.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--labels", default="", help="The labels, comma-separated: bug,billing,other.")
@click.option("--instructions", help="Instructions sent before the list of labels.")
@_bulk_file_options
def classify(
    file: Path,
    labels: str,
    instructions: str | None,
    field: str,
    output: Path | None,
    model: str | None,
    name: str | None,
    wait: bool,
    timeout: float,
    max_line_bytes: int,
) -> None:
    """Classify each row of a JSONL or CSV FILE into one of --labels, as one bulk job.

    Writes every input row plus label, status, error and job_id, in input order, and
    exits with 1 if some rows did not complete.
    """
    from flexpipe.tasks import bulk

    names = [label.strip() for label in labels.split(",") if label.strip()]
    if not names:
        fail("--labels: give the labels, comma-separated, e.g. --labels bug,billing,other")
    names = bulk.check_labels(names)
    _check_output(output, wait)
    with _reading(file, field, max_line_bytes) as texts:
        bulk_id = bulk.classify(texts, names, instructions, name=name or file.name, model=model)
    _finish_bulk_file(bulk_id, file, field, max_line_bytes, "label", output, wait, timeout)


@cli.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--instructions", help="Instructions (default: two or three sentences).")
@_bulk_file_options
def summarize(
    file: Path,
    instructions: str | None,
    field: str,
    output: Path | None,
    model: str | None,
    name: str | None,
    wait: bool,
    timeout: float,
    max_line_bytes: int,
) -> None:
    """Summarise each row of a JSONL or CSV FILE, as one bulk job.

    Writes every input row plus summary, status, error and job_id, in input order, and
    exits with 1 if some rows did not complete.
    """
    from flexpipe.tasks import bulk

    _check_output(output, wait)
    with _reading(file, field, max_line_bytes) as texts:
        bulk_id = bulk.summarize(texts, instructions, name=name or file.name, model=model)
    _finish_bulk_file(bulk_id, file, field, max_line_bytes, "summary", output, wait, timeout)


@bulk.command("results")
@click.argument("bulk_id")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this .jsonl or .csv file (default: JSON Lines on stdout).",
)
def bulk_results(bulk_id: str, output: Path | None) -> None:
    """Write a bulk job's items in input order: item, job_id, status, label, summary, error."""
    from flexpipe.cli.rows import RowsError, output_format, write_rows
    from flexpipe.tasks import bulk as bulk_jobs

    try:
        if output is not None:
            output_format(output)
        rows = [
            {
                "item": item.index,
                "job_id": item.job_id,
                "status": item.status.value,
                "label": item.label,
                "summary": item.summary,
                "error": item.error,
            }
            for item in bulk_jobs.results(bulk_id)
        ]
        write_rows(rows, output, sys.stdout)
    except RowsError as exc:
        fail(str(exc))


def _check_output(output: Path | None, wait: bool) -> None:
    """Check the output path before reading anything (nothing is enqueued if it is wrong)."""
    from flexpipe.cli.rows import RowsError, output_format

    if output is not None and not wait:
        fail("--output needs --wait; later, use: flexpipe bulk results BULK_ID --output FILE")
    try:
        if output is not None:
            output_format(output)
    except RowsError as exc:
        fail(str(exc))


@contextmanager
def _reading(file: Path, field: str, max_line_bytes: int) -> Iterator[Iterator[str]]:
    """FILE's texts as a stream, with a progress bar on stderr while they are enqueued.

    The rows are read, validated and written one chunk at a time inside the bulk's one
    transaction, so a bad row anywhere (its line number is named) leaves nothing written.
    """
    from rich.progress import (
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from flexpipe.cli.rows import RowsError, iter_rows

    size = file.stat().st_size if file.is_file() else 0
    columns = (
        TextColumn("enqueueing", style="bold"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rows]:,} rows"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task("enqueue", total=size or None, rows=0)

        def on_read(done: int) -> None:
            progress.update(task, completed=done)

        def texts() -> Iterator[str]:
            for count, row in enumerate(
                iter_rows(file, field, max_line_bytes=max_line_bytes, on_read=on_read), 1
            ):
                if count % 1000 == 0:
                    progress.update(task, rows=count)
                yield row[field]

        try:
            yield texts()
        except RowsError as exc:
            fail(str(exc))


def _finish_bulk_file(
    bulk_id: str,
    file: Path,
    field: str,
    max_line_bytes: int,
    key: str,
    output: Path | None,
    wait: bool,
    timeout: float,
) -> None:
    """Print the bulk id, or wait for the bulk and write each row with its outcome
    (FILE is read again, so its rows are never all in memory at once)."""
    from flexpipe.cli.rows import RowsError, iter_rows, write_rows
    from flexpipe.tasks import bulk as bulk_jobs

    if not wait:
        console.print(bulk_id)
        return
    b = _wait_with_progress(bulk_id, timeout)
    items = {item.index: item for item in bulk_jobs.results(bulk_id)}

    def written() -> Iterator[dict[str, Any]]:
        for position, row in enumerate(iter_rows(file, field, max_line_bytes=max_line_bytes)):
            item = items[position]
            outcome = {key: getattr(item, key), "status": item.status.value, "error": item.error}
            yield {**row, **outcome, "job_id": item.job_id}

    try:
        write_rows(written(), output, sys.stdout)
    except RowsError as exc:
        fail(str(exc))
    err_console.print(
        f"bulk {bulk_id}: {b.completed} completed, {b.failed} failed, "
        f"{b.incomplete} incomplete, {b.cancelled} cancelled, {b.expired} expired"
        + (f"; wrote {output}" if output else ""),
        soft_wrap=True,
    )
    if b.completed < b.total:
        sys.exit(1)


def _wait_with_progress(bulk_id: str, timeout: float) -> Any:
    """Wait for a bulk job with a progress bar and an ETA on stderr (stdout may hold rows)."""
    import time

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from flexpipe.tasks import api

    b = api.get_bulk(bulk_id)
    end = time.monotonic() + timeout
    columns = (
        TextColumn("{task.fields[name]}", style="bold", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console) as progress:
        task = progress.add_task("bulk", total=b.total, detail="", name=b.name or bulk_id[:8])
        while True:
            b = api.get_bulk(bulk_id)
            detail = (
                f"pending {b.pending}  in flight {b.in_flight}  "
                f"failed {b.failed + b.expired + b.cancelled}"
            )
            progress.update(task, completed=b.done, detail=detail)
            if b.finished:
                return b
            if time.monotonic() > end:
                fail(
                    f"bulk {bulk_id} is not finished after {timeout:g}s ({b.done}/{b.total}); "
                    f"wait with: flexpipe bulk wait {bulk_id}"
                )
            time.sleep(0.5)
