"""flexpipe's tasks on a host's own Celery app and broker (Redis), run by the host's own
worker: no flexpipe worker at all. Issue 10, item 3: with the host on Redis and no
``FLEXPIPE_BROKER_URL``, callbacks used to wait in ``.flexpipe/broker`` for ever; now
flexpipe publishes on the host's broker, and a different broker stops the worker."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from flexpipe.config import celery as flexpipe_celery
from flexpipe.migrations import upgrade
from flexpipe.tasks import api
from tests.integration import callbacks
from tests.integration.stack import ROOT, Stack

pytestmark = pytest.mark.integration


class HostWorker:
    """``celery -A tests.integration.host_app worker -B`` on the given queues: the host's
    worker with its embedded beat, which runs flexpipe's sweeper (``register`` put it in the
    host's beat schedule), so polls parked in SQL are sent when due."""

    def __init__(
        self,
        env: dict[str, str],
        queues: list[str],
        log: Path,
        app: str = "tests.integration.host_app",
    ) -> None:
        argv = [sys.executable, "-m", "celery", "-A", app, "worker"]
        argv += ["-Q", ",".join(queues), "-c", "2", "-l", "info"]
        argv += ["-B", "-s", str(log.parent / "host-beat-schedule")]
        argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        self.log = log
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                argv,
                cwd=ROOT,
                env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()


@pytest.fixture
def host_stack(
    redis_server: str, postgres_url: str, tmp_path: Path, emulator: str
) -> Iterator[Stack]:
    """flexpipe's settings for a host on Redis: no FLEXPIPE_BROKER_URL at all."""
    stack = Stack(
        name="host",
        data_dir=tmp_path,
        database_url=postgres_url,
        broker_url="unused",
        emulator_url=emulator,
        extra_env={"FLEXPIPE_IMPORTS": "", "HOST_BROKER_URL": f"{redis_server}/0"},
    )
    del stack.env["FLEXPIPE_BROKER_URL"]
    stack.env["HOST_QUEUE"] = stack.env["FLEXPIPE_CALLBACK_QUEUE"] = f"host-{uuid.uuid4().hex[:8]}"
    stack.activate()
    upgrade(postgres_url)
    callbacks.create_table(stack.store.engine)
    from tests.integration import host_app

    flexpipe_celery.use_host(host_app.app)  # this process is the host's web side
    yield stack
    flexpipe_celery.use_host(None)
    stack.stop()


def queues(stack: Stack) -> list[str]:
    env = stack.env
    return [env["HOST_QUEUE"], env["FLEXPIPE_QUEUE"], env["FLEXPIPE_POLL_QUEUE"]]


def test_host_worker_runs_flexpipe_and_its_callback_on_the_host_broker(
    host_stack: Stack, tmp_path: Path
) -> None:
    worker = HostWorker(host_stack.env, queues(host_stack), tmp_path / "host.log")
    try:
        job_id = api.enqueue(
            "The Harbour Board approved a new ferry timetable.",
            callback="tests.integration.host_app.summary_ready",
        )
        host_stack.log_path = worker.log
        host_stack.wait_terminal([job_id], timeout=60)
        assert api.get(job_id).status.value == "completed"
        wait_for(lambda: callbacks.counts(host_stack.store.engine).get(job_id) == 1, worker)
    finally:
        worker.stop()
    assert not list((tmp_path / "broker").glob("**/*.msg")), "nothing left in a folder broker"


def test_a_flexpipe_broker_the_host_does_not_consume_stops_its_worker(
    host_stack: Stack, tmp_path: Path
) -> None:
    env = {**host_stack.env, "FLEXPIPE_BROKER_URL": "filesystem://"}
    worker = HostWorker(env, queues(host_stack), tmp_path / "host.log")
    try:
        code = worker.process.wait(timeout=60)
    finally:
        worker.stop()
    output = worker.log.read_text()
    assert code != 0
    assert "flexpipe: flexpipe publishes to filesystem:" in output
    assert "but Celery app 'host' consumes redis://" in output


def wait_for(condition: object, worker: HostWorker, timeout: float = 30) -> None:
    import time

    end = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > end:
            raise AssertionError("callback not run by the host worker:\n" + worker.log.read_text())
        time.sleep(0.05)


def test_flask_callback_runs_in_the_app_context_in_the_apps_worker(
    host_stack: Stack, tmp_path: Path
) -> None:
    # Issue 10, item 5: with FLEXPIPE_IMPORTS alone it failed "Working outside of
    # application context"; on the app's own Celery (celery_init_app) it has one.
    argv_app = "tests.integration.flask_host.celery_app"
    worker = HostWorker(host_stack.env, queues(host_stack), tmp_path / "flask.log", argv_app)
    try:
        from tests.integration import flask_host

        flexpipe_celery.use_host(flask_host.celery_app)
        job_id = api.enqueue(STORY, callback="tests.integration.flask_host.summary_ready")
        host_stack.log_path = worker.log
        host_stack.wait_terminal([job_id], timeout=60)
        wait_for(lambda: callbacks.counts(host_stack.store.engine).get(job_id) == 1, worker)
    finally:
        worker.stop()
    with host_stack.store.engine.connect() as conn:
        notes = conn.execute(
            callbacks.calls.select().where(callbacks.calls.c.job_id == job_id)
        ).all()
    assert [row.note for row in notes] == ["from the app context"]


STORY = "The Harbour Board approved a new ferry timetable."
