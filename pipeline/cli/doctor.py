"""``flexpipe doctor``: checks a deployment and says what is wrong in plain words.

One line per check (broker, database, schema, beat, workers, callbacks), exit code 0 when
every check passes and 1 otherwise. A check it cannot make (the embedded broker has no
remote control to ask workers) says so and does not fail.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import click

from flexpipe.cli.group import cli


@dataclass(frozen=True)
class Finding:
    check: str
    #: True: passed; False: failed; None: could not be checked here.
    ok: bool | None
    detail: str

    def line(self) -> str:
        mark = {True: "ok  ", False: "FAIL", None: "?   "}[self.ok]
        return f"{mark}  {self.check}: {self.detail}"


@cli.command()
def doctor() -> None:
    """Check the broker, database, schema, beat, workers and callback queue."""
    findings = diagnose()
    for finding in findings:
        click.echo(finding.line())
    sys.exit(0 if all(f.ok is not False for f in findings) else 1)


def diagnose() -> list[Finding]:
    """Run every check against the current settings; never raises."""
    from flexpipe.config.settings import get_settings

    settings = get_settings()
    findings = [_guard("broker", lambda: _broker(settings))]
    store, db_finding = _database(settings)
    findings.append(db_finding)
    schema = _guard("schema", lambda: _schema(store)) if store else _unchecked("schema")
    findings.append(schema)
    findings.append(
        _guard("beat", lambda: _beat(store, settings))
        if store and schema.ok
        else _unchecked("beat")
    )
    if store is not None:
        store.dispose()
    queues = _guard_queues(settings)
    if isinstance(queues, Finding):
        findings += [queues, Finding("callbacks", queues.ok, queues.detail)]
    else:
        findings += [_workers(settings, queues), _callbacks(settings, queues)]
    return findings


def _unchecked(check: str) -> Finding:
    return Finding(check, None, "not checked (the database is not usable)")


def _guard(check: str, run: Callable[[], Finding]) -> Finding:
    try:
        return run()
    except Exception as exc:  # a doctor reports; it does not crash
        return Finding(check, False, _first_line(exc))


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return (text.splitlines()[0] if text else "") or type(exc).__name__


def _broker(settings: Any) -> Finding:
    from flexpipe.config.celery import app

    if settings.embedded_broker:
        return Finding("broker", True, f"embedded, in {settings.data_dir.resolve() / 'broker'}")
    with app.connection_for_write() as conn:
        where = conn.as_uri()
        try:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=settings.doctor_timeout)
        except Exception as exc:
            return Finding("broker", False, f"cannot connect to {where}: {_first_line(exc)}")
    return Finding("broker", True, f"reachable ({where})")


def _database(settings: Any) -> tuple[Any, Finding]:
    from flexpipe.store import Store, safe_url

    where = safe_url(settings.db_url)
    kwargs: dict[str, Any] = {}
    if settings.db_url.startswith("postgresql"):
        kwargs["connect_args"] = {"connect_timeout": max(1, round(settings.doctor_timeout))}
    try:
        store = Store.from_url(settings.db_url, schema=settings.db_schema, **kwargs)
        with store.engine.connect() as conn:
            conn.exec_driver_sql("select 1")
    except Exception as exc:
        return None, Finding("database", False, f"cannot connect to {where}: {_first_line(exc)}")
    return store, Finding("database", True, f"reachable ({where})")


def _schema(store: Any) -> Finding:
    from flexpipe.migrations import OUT_OF_DATE, heads, is_current

    if not is_current(store.engine, store.schema):
        return Finding("schema", False, OUT_OF_DATE)
    return Finding("schema", True, f"up to date (revision {', '.join(sorted(heads()))})")


def _beat(store: Any, settings: Any) -> Finding:
    stale_after = max(settings.beat_stale_after, 3 * settings.sweep_interval)
    start = "start one: flexpipe worker --beat, or flexpipe beat beside the workers"
    last = store.last_beat("sweeper")
    if last is None:
        return Finding(
            "beat", False, f"the sweeper has never run, so no beat is sweeping ({start})"
        )
    at, host, pid = last
    age = (datetime.now(UTC) - at).total_seconds()
    if age > stale_after:
        return Finding(
            "beat",
            False,
            f"the sweeper last ran {age:.0f}s ago (on {host}, pid {pid}), more than "
            f"{stale_after:g}s: no beat is sweeping, or no worker runs the sweep ({start})",
        )
    return Finding("beat", True, f"the sweeper ran {age:.1f}s ago (on {host}, pid {pid})")


def _guard_queues(settings: Any) -> dict[str, list[str]] | Finding:
    """Which queues each worker consumes, by Celery's ``inspect active_queues``."""
    from flexpipe.config.celery import app

    if settings.embedded_broker:
        return Finding(
            "workers", None, "cannot ask workers on the embedded broker (it has no remote control)"
        )
    try:
        # broadcast, not inspect(): inspect keys replies by node name, and workers that share
        # one (every default ``celery@host`` on a machine) would hide each other.
        replies = app.control.broadcast(
            "active_queues", reply=True, timeout=settings.doctor_timeout
        )
    except Exception as exc:
        return Finding("workers", False, f"cannot ask workers: {_first_line(exc)}")
    found: dict[str, list[str]] = {}
    for number, reply in enumerate(replies or []):
        for node, queues in reply.items():
            names = [q["name"] for q in queues] if isinstance(queues, list) else []
            found[f"{node}#{number}"] = names
    return found


def _consumers(queues: dict[str, list[str]], queue: str) -> list[str]:
    return sorted(worker for worker, names in queues.items() if queue in names)


def _workers(settings: Any, queues: dict[str, list[str]]) -> Finding:
    missing = [q for q in (settings.queue, settings.poll_queue) if not _consumers(queues, q)]
    if missing:
        seen = f"{len(queues)} worker(s) answered" if queues else "no worker answered"
        return Finding(
            "workers",
            False,
            f"no worker consumes {' or '.join(repr(q) for q in missing)} ({seen}; "
            "start one: flexpipe worker)",
        )
    count = len(
        set(_consumers(queues, settings.queue)) | set(_consumers(queues, settings.poll_queue))
    )
    return Finding(
        "workers", True, f"{count} worker(s) consume {settings.queue!r} and {settings.poll_queue!r}"
    )


def _callbacks(settings: Any, queues: dict[str, list[str]]) -> Finding:
    consumers = _consumers(queues, settings.callback_queue)
    if not consumers:
        return Finding(
            "callbacks",
            False,
            f"no worker consumes the callback queue {settings.callback_queue!r} "
            "(FLEXPIPE_CALLBACK_QUEUE): callbacks would wait there unrun",
        )
    return Finding(
        "callbacks",
        True,
        f"queue {settings.callback_queue!r} is consumed by {len(consumers)} worker(s)",
    )


__all__ = ["Finding", "diagnose", "doctor"]
