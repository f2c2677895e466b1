"""``flexpipe submit``, ``status``, ``result``, ``list``, ``cancel`` and ``retry``: one job
at a time."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from flexpipe.cli.group import cli, console, err_console, fail, timestamp


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
        console.print(job_id)
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
        ("created", timestamp(job.created_at)),
        ("submitted", timestamp(job.submitted_at)),
        ("finished", timestamp(job.finished_at)),
        ("next poll", timestamp(job.next_poll_at)),
        ("deadline", timestamp(job.deadline_at)),
        ("error", f"{job.error_code}: {job.error_message}" if job.error_code else "-"),
    ]:
        table.add_row(Text(key, style="bold"), value)
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
        err_console.print(Text.assemble((view.status.value, "yellow"), ": ", view.error))
    if res is not None and res.output_text:
        click.echo(res.output_text)
    if view.status.value not in ("completed", "incomplete"):
        sys.exit(1)


@cli.command("list")
@click.option("--status", "status_", help="Only jobs with this status.")
@click.option(
    "--limit", default=20, show_default=True, type=click.IntRange(1, 10_000), help="How many jobs."
)
def list_jobs(status_: str | None, limit: int) -> None:
    """List recent jobs, each id shortened to its shortest unique prefix (8 or more
    characters; every command that takes a job id takes it)."""
    from flexpipe.states import JobStatus
    from flexpipe.tasks.runtime import runtime

    if status_ and status_ not in {s.value for s in JobStatus}:
        fail(f"--status must be one of {', '.join(s.value for s in JobStatus)}")
    store = runtime().store
    jobs = store.list_jobs(status=status_, limit=limit)
    short = store.short_ids(job.id for job in jobs)
    width = max((len(s) for s in short.values()), default=8)
    table = Table()
    # The id is never cut: a cut id is one nobody can type back.
    table.add_column("job", no_wrap=True, min_width=width)
    for header in ("status", "model", "tier", "polls", "created", "error"):
        table.add_column(header)
    for job in jobs:
        error = f"{job.error_code}: {job.error_message}" if job.error_code else ""
        table.add_row(
            short[job.id],
            job.status.value,
            job.request.model,
            job.request.service_tier,
            str(job.poll_count),
            timestamp(job.created_at),
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
        f"{view.id} {view.status.value}" + (f" ({view.error})" if view.error else "")
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
        console.print(f"{job_id} resubmitted (attempt {attempt})")
        return
    assert status_ is not None
    ids = api.retry_all([JobStatus(status_)], since=_parse_since(since))
    console.print(f"{len(ids)} {status_} job(s) resubmitted")


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
