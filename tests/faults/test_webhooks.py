"""Webhooks under faults: the openai-flavoured emulator signs and POSTs ``response.*`` events
to a real receiver (``flexpipe webhooks`` in a subprocess), 300 jobs per scenario, on the
shared Redis and PostgreSQL (left as they were). Each ends with every job terminal, one
result row and one callback message each, and no badly signed event recorded."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from flexpipe.emulator.webhooks import new_secret
from flexpipe.schema import jobs, webhook_events
from tests.faults.conftest import JOBS, assert_nothing_lost_nothing_twice, enqueue_jobs
from tests.integration.stack import ROOT, emulator_call

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Receiver:
    """``flexpipe webhooks`` on a free port, with the stack's settings."""

    def __init__(self, env: dict[str, str], log_path: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "flexpipe.cli", "webhooks", "--port", str(self.port)],
                cwd=ROOT,
                env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        end = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.url, timeout=1)
            except urllib.error.HTTPError:
                return  # 405 to a GET: it is up
            except OSError:
                if self.process.poll() is not None or time.monotonic() > end:
                    raise AssertionError("no receiver:\n" + log_path.read_text()) from None
                time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def with_webhooks(scenario, tmp_path) -> Iterator[Any]:
    receivers: list[Receiver] = []

    def make(*, faults: dict[str, Any], env: dict[str, str] | None = None, **emulator: Any):
        secret = new_secret()
        settings = {
            "FLEXPIPE_WEBHOOKS": "true",
            "FLEXPIPE_WEBHOOK_SECRET": secret,
            # The safety net: 3 s scaled before the first poll, then doubling.
            "FLEXPIPE_POLL_WEBHOOK_FIRST_DELAY": "300",
            **(env or {}),
        }
        sc = scenario(flavor="openai", faults=faults, env=settings, **emulator)
        receiver = Receiver(sc.stack.env, tmp_path / "receiver.log")
        receivers.append(receiver)
        emulator_call(sc.emulator_url, "/_emulator/webhooks", {"urls": [receiver.url],
                                                                "secret": secret})
        return sc, receiver

    yield make
    for receiver in receivers:
        receiver.stop()


def _stats(sc) -> dict[str, int]:
    return emulator_call(sc.emulator_url, "/_emulator/stats")["webhooks"]


def _wait_deliveries(sc) -> dict[str, int]:
    """The emulator's webhook counters once nothing is pending or being retried."""
    end = time.monotonic() + 30
    while True:
        stats = _stats(sc)
        if not stats["pending"] and not stats["retrying"]:
            return stats
        if time.monotonic() > end:
            raise AssertionError(f"webhooks still in flight: {stats}")
        time.sleep(0.2)


def _recorded(sc, ids: list[str]) -> list[Any]:  # every event the receiver recorded
    with sc.stack.store.engine.connect() as conn:
        return conn.execute(
            sa.select(webhook_events, jobs.c.submitted_at)
            .join(jobs, jobs.c.id == webhook_events.c.job_id, isouter=True)
        ).all()


def _poll_counts(sc, ids: list[str]) -> list[int]:
    with sc.stack.store.engine.connect() as conn:
        return list(
            conn.execute(sa.select(jobs.c.poll_count).where(jobs.c.id.in_(ids))).scalars()
        )


def test_30_percent_of_webhooks_dropped(with_webhooks) -> None:
    sc, _ = with_webhooks(faults={"webhook_drop_rate": 0.3})
    ids = enqueue_jobs()
    assert_nothing_lost_nothing_twice(sc, ids)
    stats = _wait_deliveries(sc)
    assert stats["events"] == JOBS and 0.2 * JOBS < stats["dropped"] < 0.4 * JOBS
    rows = _recorded(sc, ids)
    assert len(rows) == stats["events"] - stats["dropped"]  # each delivered event once
    polls = _poll_counts(sc, ids)
    # A webhook's job is read once; a dropped one's by the safety net, a little later.
    assert sum(1 for n in polls if n == 1) >= JOBS - stats["dropped"]
    assert max(polls) <= 3


def test_every_webhook_delivered_twice(with_webhooks) -> None:
    sc, _ = with_webhooks(faults={"webhook_duplicate_rate": 1.0})
    ids = enqueue_jobs()
    assert_nothing_lost_nothing_twice(sc, ids)
    stats = _wait_deliveries(sc)
    assert stats["duplicated"] == JOBS and stats["sent"] == 2 * JOBS
    rows = _recorded(sc, ids)
    assert len(rows) == JOBS and {r.job_id for r in rows} == set(ids)
    assert all(r.handled_at is not None for r in rows)
    assert _poll_counts(sc, ids) == [1] * JOBS  # the second delivery read nothing again


def test_webhooks_before_the_submit_commit(with_webhooks) -> None:
    # Jobs end a millisecond after the create answers: the webhook comes while the worker
    # is still reading that answer and committing the response id. The safety net's first
    # poll is 30 s (scaled) after the submit, so an early event must reach its job through
    # the submit's claim (its next poll "in 0.0s") or the sweeper's match.
    sc, _ = with_webhooks(
        faults={},
        env={
            "FLEXPIPE_POLL_WEBHOOK_FIRST_DELAY": "3000",
            "FLEXPIPE_POLL_WEBHOOK_MAX_DELAY": "3000",
        },
        latency={"flex": "fixed:0.1"},
        queue_delay={"flex": "fixed:0"},
    )
    ids = enqueue_jobs()
    assert_nothing_lost_nothing_twice(sc, ids)
    rows = _recorded(sc, ids)
    assert len(rows) == JOBS and {r.job_id for r in rows} == set(ids)
    early = [r for r in rows if r.received_at < r.submitted_at]
    assert len(early) >= JOBS // 10, f"only {len(early)} webhooks came before the commit"
    assert "'poll in 0.0s'" in sc.stack.log_path.read_text()  # the submit claimed one
    assert _poll_counts(sc, ids) == [1] * JOBS


def test_badly_signed_webhooks_mixed_in(with_webhooks) -> None:
    sc, receiver = with_webhooks(faults={"webhook_bad_signature_rate": 0.3})
    ids = enqueue_jobs()
    assert_nothing_lost_nothing_twice(sc, ids)
    stats = _wait_deliveries(sc)
    assert 0.2 * JOBS < stats["bad_signature"] < 0.4 * JOBS
    assert stats["gave_up"] == stats["bad_signature"]  # every attempt refused with 400
    rows = _recorded(sc, ids)
    assert len(rows) == JOBS - stats["bad_signature"]  # no bad event accepted
    assert "webhook refused" in receiver.log_path.read_text()
