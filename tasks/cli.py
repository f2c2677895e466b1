"""The ``flexpipe`` command line: submit and inspect jobs, run workers, the emulator, the demo.

Errors print one line and exit with code 2.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.table import Table

from flexpipe.errors import FlexpipeError

console = Console()
err_console = Console(stderr=True)


class CliError(click.ClickException):
    exit_code = 2

    def show(self, file: Any = None) -> None:
        # soft_wrap: one line whatever the width (rich wraps at 80 columns without a tty).
        err_console.print(
            f"[red]error:[/red] {self.format_message()}", highlight=False, soft_wrap=True
        )


def fail(message: str) -> NoReturn:
    raise CliError(message)


class FlexpipeGroup(click.Group):
    """Turns flexpipe errors raised by any command into one line and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FlexpipeError as exc:
            raise CliError(str(exc)) from None


@click.group(cls=FlexpipeGroup, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """flexpipe: durable background LLM work on flex inference, from Celery."""


@cli.command()
@click.argument("text")
@click.option("--model", help="Model name (default: FLEXPIPE_MODEL).")
@click.option("--instructions", help="System instructions.")
@click.option(
    "--schema",
    "schema_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSON Schema file for structured output.",
)
@click.option("--tier", type=click.Choice(["flex", "priority"]), help="Service tier.")
@click.option("--max-output-tokens", type=int, help="Cap on output tokens.")
@click.option("--wait", is_flag=True, help="Wait for the result and print it.")
@click.option("--timeout", default=600.0, show_default=True, help="Seconds to wait with --wait.")
def submit(
    text: str,
    model: str | None,
    instructions: str | None,
    schema_file: Path | None,
    tier: str | None,
    max_output_tokens: int | None,
    wait: bool,
    timeout: float,
) -> None:
    """Enqueue TEXT as a job and print its id (a worker must be running)."""
    from flexpipe.tasks import api

    schema = None
    if schema_file is not None:
        try:
            schema = json.loads(schema_file.read_text())
        except (OSError, ValueError) as exc:
            fail(f"--schema: cannot read {schema_file}: {exc}")
    job_id = api.enqueue(
        text,
        model=model,
        instructions=instructions,
        schema=schema,
        service_tier=tier,
        max_output_tokens=max_output_tokens,
    )
    if not wait:
        console.print(job_id, highlight=False)
        return
    try:
        view = api.wait(job_id, timeout=timeout)
    except TimeoutError as exc:
        fail(str(exc))
    _print_result(view, as_json=False)


@cli.command()
@click.argument("job_id")
def status(job_id: str) -> None:
    """Show a job's status and timings."""
    from flexpipe.tasks import api

    job = api.get(job_id).job
    table = Table(show_header=False, box=None)
    for key, value in [
        ("job", job.id),
        ("status", job.status.value),
        ("model", job.request.model),
        ("tier", job.request.service_tier),
        ("response id", job.response_id or "-"),
        ("attempt", str(job.attempt)),
        ("polls", str(job.poll_count)),
        ("created", _ts(job.created_at)),
        ("submitted", _ts(job.submitted_at)),
        ("finished", _ts(job.finished_at)),
        ("next poll", _ts(job.next_poll_at)),
        ("deadline", _ts(job.deadline_at)),
        ("error", f"{job.error_code}: {job.error_message}" if job.error_code else "-"),
    ]:
        table.add_row(f"[bold]{key}[/bold]", value)
    console.print(table)


@cli.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the stored result as JSON.")
def result(job_id: str, as_json: bool) -> None:
    """Print a finished job's output."""
    from flexpipe.tasks import api

    view = api.get(job_id)
    if not view.terminal:
        fail(f"job {job_id} is still {view.status.value}")
    _print_result(view, as_json=as_json)


def _print_result(view: Any, *, as_json: bool) -> None:
    res = view.result
    if as_json:
        data = {
            "job_id": view.id,
            "status": view.status.value,
            "error": view.error,
            "output_text": res.output_text if res else None,
            "parsed": res.parsed if res else None,
            "usage": None
            if res is None
            else {
                "input_tokens": res.usage.input_tokens,
                "cached_tokens": res.usage.cached_tokens,
                "output_tokens": res.usage.output_tokens,
                "reasoning_tokens": res.usage.reasoning_tokens,
                "total_tokens": res.usage.total_tokens,
            },
            "served_tier": res.served_tier if res else None,
            "response_id": res.response_id if res else None,
        }
        click.echo(json.dumps(data, indent=2))
        return
    if view.error:
        err_console.print(f"[yellow]{view.status.value}[/yellow]: {view.error}", highlight=False)
    if res is not None and res.output_text:
        click.echo(res.output_text)
    if view.status.value not in ("completed", "incomplete"):
        sys.exit(1)


@cli.command("list")
@click.option("--status", "status_", help="Only jobs with this status.")
@click.option("--limit", default=20, show_default=True, help="How many jobs.")
def list_jobs(status_: str | None, limit: int) -> None:
    """List recent jobs."""
    from flexpipe.states import JobStatus
    from flexpipe.tasks.runtime import runtime

    if status_ and status_ not in {s.value for s in JobStatus}:
        fail(f"--status must be one of {', '.join(s.value for s in JobStatus)}")
    jobs = runtime().store.list_jobs(status=status_, limit=limit)
    table = Table("job", "status", "model", "tier", "polls", "created", "error")
    for job in jobs:
        error = f"{job.error_code}: {job.error_message}" if job.error_code else ""
        table.add_row(
            job.id,
            job.status.value,
            job.request.model,
            job.request.service_tier,
            str(job.poll_count),
            _ts(job.created_at),
            error,
        )
    console.print(table)


@cli.command()
@click.argument("job_id")
def cancel(job_id: str) -> None:
    """Cancel a job (at the provider too, where it supports cancel)."""
    from flexpipe.tasks import api

    view = api.cancel(job_id)
    console.print(
        f"{view.id} {view.status.value}" + (f" ({view.error})" if view.error else ""),
        highlight=False,
    )


@cli.command()
@click.argument("job_id", required=False)
@click.option(
    "--status",
    "status_",
    type=click.Choice(["failed", "expired", "cancelled", "incomplete"]),
    help="Retry every job with this status instead of one job.",
)
@click.option(
    "--since",
    help="With --status: only jobs that ended after this (ISO time, or an age like 30m, 6h, 2d).",
)
def retry(job_id: str | None, status_: str | None, since: str | None) -> None:
    """Resubmit a failed job (or all with --status) as a new attempt; history is kept."""
    from flexpipe.states import JobStatus
    from flexpipe.tasks import api

    if (job_id is None) == (status_ is None):
        fail("give either a JOB id or --status")
    if job_id is not None:
        attempt = api.retry(job_id)
        console.print(f"{job_id} resubmitted (attempt {attempt})", highlight=False)
        return
    assert status_ is not None
    ids = api.retry_all([JobStatus(status_)], since=_parse_since(since))
    console.print(f"{len(ids)} {status_} job(s) resubmitted", highlight=False)


def _parse_since(value: str | None) -> Any:
    import re
    from datetime import UTC, datetime, timedelta

    if value is None:
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", value.strip())
    if match:
        seconds = float(match[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]
        return datetime.now(UTC) - timedelta(seconds=seconds)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        fail(f"--since: {value!r} is neither an ISO time nor an age like 30m, 6h, 2d")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@cli.command()
@click.option("--beat", is_flag=True, help="Also run the beat scheduler (the sweeper) inside.")
@click.option("--concurrency", "-c", type=int, help="Worker processes.")
@click.option("--loglevel", "-l", default="info", show_default=True)
def worker(beat: bool, concurrency: int | None, loglevel: str) -> None:
    """Run a Celery worker on flexpipe's queues."""
    os.execvp(sys.executable, worker_command(beat=beat, concurrency=concurrency, loglevel=loglevel))


def worker_command(
    *, beat: bool = False, concurrency: int | None = None, loglevel: str = "info"
) -> list[str]:
    """The argv of a worker process (the CLI, the demo and the tests all use this)."""
    from flexpipe.config.settings import get_settings

    settings = get_settings()
    queues = [settings.queue, settings.poll_queue]
    if settings.import_list and settings.callback_queue not in queues:
        queues.append(settings.callback_queue)  # the imported modules hold callback tasks
    argv = [sys.executable, "-m", "celery", "-A", "flexpipe.config.celery", "worker"]
    argv += ["-Q", ",".join(queues), "-l", loglevel]
    if concurrency or settings.worker_concurrency:
        argv += ["-c", str(concurrency or settings.worker_concurrency)]
    if beat:
        argv += ["-B", "-s", str((settings.data_dir / "beat-schedule").resolve())]
    if settings.embedded_broker:
        argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    return argv


@cli.command()
@click.option("--loglevel", "-l", default="info", show_default=True)
def beat(loglevel: str) -> None:
    """Run the beat scheduler (sends the sweeper)."""
    from flexpipe.config.settings import get_settings

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    os.execvp(
        sys.executable,
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "flexpipe.config.celery",
            "beat",
            "-l",
            loglevel,
            "-s",
            str((settings.data_dir / "beat-schedule").resolve()),
        ],
    )


@cli.command()
@click.option("--port", default=5555, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--address",
    default="127.0.0.1",
    show_default=True,
    help="Interface to bind (0.0.0.0 in a container).",
)
@click.option(
    "--no-auth",
    is_flag=True,
    help="Run without basic auth (Flower's API then answers 401 to everyone).",
)
def flower(port: int, address: str, no_auth: bool) -> None:
    """Run Flower, Celery's dashboard, with basic auth from FLEXPIPE_FLOWER_USER/_PASSWORD.

    Other Flower options come from FLOWER_* environment variables (e.g. FLOWER_URL_PREFIX).
    """
    env = flower_environment(no_auth=no_auth)
    os.execvpe(sys.executable, flower_command(port=port, address=address), env)


def flower_command(*, port: int = 5555, address: str = "127.0.0.1") -> list[str]:
    """The argv of a Flower process. Credentials travel in its environment, not in ``ps``."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "flexpipe.config.celery",
        "flower",
        f"--port={port}",
        f"--address={address}",
    ]


def flower_environment(*, no_auth: bool = False) -> dict[str, str]:
    """This process's environment plus ``FLOWER_BASIC_AUTH`` from the settings.

    Without a password it fails unless ``no_auth``; an inherited ``FLOWER_BASIC_AUTH`` is
    never used, so the settings are the only source of credentials.
    """
    from flexpipe.config.settings import get_settings

    settings = get_settings()
    env = {key: value for key, value in os.environ.items() if key != "FLOWER_BASIC_AUTH"}
    if no_auth:
        return env
    user = settings.flower_user
    password = settings.flower_password.get_secret_value() if settings.flower_password else ""
    if not password:
        fail("Flower needs FLEXPIPE_FLOWER_PASSWORD (or --no-auth)")
    # Flower splits FLOWER_BASIC_AUTH on commas; HTTP basic auth forbids ':' in user names.
    if not user or ":" in user or "," in user:
        fail("FLEXPIPE_FLOWER_USER must be non-empty, without ':' or ','")
    if "," in password:
        fail("FLEXPIPE_FLOWER_PASSWORD must not contain ','")
    env["FLOWER_BASIC_AUTH"] = f"{user}:{password}"
    return env


@cli.group()
def db() -> None:
    """Database schema commands."""


@db.command()
def upgrade() -> None:
    """Create or upgrade flexpipe's tables to the latest migration."""
    from flexpipe.config.settings import get_settings
    from flexpipe.migrations import upgrade as run_upgrade

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    run_upgrade(settings.db_url)
    console.print(f"database is up to date ({_safe_url(settings.db_url)})", highlight=False)


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@cli.command()
@click.option("--keep", is_flag=True, help="Keep the demo's data folder from the last run.")
def demo(keep: bool) -> None:
    """Run the whole flow on embedded defaults: emulator, SQLite, filesystem broker."""
    from flexpipe.tasks.demo import run_demo

    if not keep:
        shutil.rmtree(Path(".flexpipe/demo"), ignore_errors=True)
    sys.exit(run_demo(Path(".flexpipe/demo")))


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
        _ts(b.finished_at),
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
        highlight=False,
    )


# -- classify and summarize files (tasks/bulk.py, tasks/rows.py) ------------------------------


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
    rows = _read_bulk_file(file, field, output, wait)
    texts = [row[field] for row in rows]
    bulk_id = bulk.classify(texts, names, instructions, name=name or file.name, model=model)
    _finish_bulk_file(bulk_id, rows, "label", output, wait, timeout)


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
) -> None:
    """Summarise each row of a JSONL or CSV FILE, as one bulk job.

    Writes every input row plus summary, status, error and job_id, in input order, and
    exits with 1 if some rows did not complete.
    """
    from flexpipe.tasks import bulk

    rows = _read_bulk_file(file, field, output, wait)
    texts = [row[field] for row in rows]
    bulk_id = bulk.summarize(texts, instructions, name=name or file.name, model=model)
    _finish_bulk_file(bulk_id, rows, "summary", output, wait, timeout)


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
    from flexpipe.tasks import bulk as bulk_jobs
    from flexpipe.tasks.rows import RowsError, output_format, write_rows

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


def _read_bulk_file(
    file: Path, field: str, output: Path | None, wait: bool
) -> list[dict[str, Any]]:
    """Check the output path first (nothing is enqueued if it is wrong), then read FILE."""
    from flexpipe.tasks.rows import RowsError, output_format, read_rows

    if output is not None and not wait:
        fail("--output needs --wait; later, use: flexpipe bulk results BULK_ID --output FILE")
    try:
        if output is not None:
            output_format(output)
        return read_rows(file, field)
    except RowsError as exc:
        fail(str(exc))


def _finish_bulk_file(
    bulk_id: str,
    rows: list[dict[str, Any]],
    key: str,
    output: Path | None,
    wait: bool,
    timeout: float,
) -> None:
    """Print the bulk id, or wait for the bulk and write each row with its outcome."""
    from flexpipe.tasks import bulk as bulk_jobs
    from flexpipe.tasks.rows import RowsError, write_rows

    if not wait:
        console.print(bulk_id, highlight=False)
        return
    b = _wait_with_progress(bulk_id, timeout)
    items = {item.index: item for item in bulk_jobs.results(bulk_id)}
    written = []
    for position, row in enumerate(rows):
        item = items[position]
        outcome = {key: getattr(item, key), "status": item.status.value, "error": item.error}
        written.append({**row, **outcome, "job_id": item.job_id})
    try:
        write_rows(written, output, sys.stdout)
    except RowsError as exc:
        fail(str(exc))
    err_console.print(
        f"bulk {bulk_id}: {b.completed} completed, {b.failed} failed, "
        f"{b.incomplete} incomplete, {b.cancelled} cancelled, {b.expired} expired"
        + (f"; wrote {output}" if output else ""),
        highlight=False,
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
        TextColumn(f"[bold]{b.name or bulk_id[:8]}[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console) as progress:
        task = progress.add_task("bulk", total=b.total, detail="")
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


def _ts(value: Any) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def _add_emulator() -> None:
    from flexpipe.emulator.cli import emulator

    cli.add_command(emulator)


def main() -> None:
    _add_emulator()
    try:
        cli.main(prog_name="flexpipe", standalone_mode=True)
    except FlexpipeError as exc:  # raised while importing settings, before a command ran
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
