"""``flexpipe worker``, ``beat``, ``flower`` and ``db``: the processes flexpipe runs, and
the argv each runs with (the demo, the tests and the benchmarks start the same ones)."""

from __future__ import annotations

import os
import sys

import click

from flexpipe.cli.group import cli, console, fail


@cli.command()
@click.option("--beat", is_flag=True, help="Also run the beat scheduler (the sweeper) inside.")
@click.option("--concurrency", "-c", type=int, help="Worker processes.")
@click.option("--loglevel", "-l", default="info", show_default=True)
def worker(beat: bool, concurrency: int | None, loglevel: str) -> None:
    """Run a Celery worker on flexpipe's queues (with ``--beat``: exits if its beat dies)."""
    from flexpipe.config.settings import get_settings

    get_settings().data_dir.mkdir(parents=True, exist_ok=True)
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
    from flexpipe.store import safe_url

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    run_upgrade(settings.db_url, schema=settings.db_schema)
    console.print(f"database is up to date ({safe_url(settings.db_url)})", highlight=False)


@db.command()
@click.option(
    "--older-than",
    "older_than",
    required=True,
    help="Delete finished jobs that ended longer ago than this (an age like 30d, 12h, 2w).",
)
@click.option(
    "--batch",
    type=click.IntRange(1),
    help="Jobs per transaction (default FLEXPIPE_RETENTION_BATCH).",
)
def prune(older_than: str, batch: int | None) -> None:
    """Delete finished jobs (results, attempts) and finished bulks older than an age.

    Jobs whose callback is still due, and jobs of a bulk that is open or whose completion
    callback is due, are kept. Safe while workers run: each batch is one short transaction.
    """
    import time

    from flexpipe.retention import parse_age
    from flexpipe.retention import prune as run_prune
    from flexpipe.tasks.runtime import runtime

    try:
        age = parse_age(older_than)
    except ValueError as exc:
        fail(f"--older-than: {exc}")
    rt = runtime()
    started = time.monotonic()
    pruned = run_prune(
        rt.store,
        age,
        batch=batch or rt.settings.retention_batch,
        pause=rt.settings.retention_pause,
    )
    elapsed = time.monotonic() - started
    console.print(
        f"pruned {pruned.jobs} job(s) and {pruned.bulks} bulk(s) older than {older_than} "
        f"in {elapsed:.1f}s",
        highlight=False,
    )
