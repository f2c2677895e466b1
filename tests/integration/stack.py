"""A running flexpipe for tests: settings, migrated database, a real worker subprocess.

``Stack`` points this process (the "app" side: ``flexpipe.tasks.api``) and a ``celery worker``
subprocess with embedded beat at the same database, broker and emulator.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flexpipe.states import TERMINAL

ROOT = Path(__file__).resolve().parents[2]
TIME_SCALE = 0.01


class Stack:
    def __init__(
        self,
        *,
        name: str,
        data_dir: Path,
        database_url: str,
        broker_url: str,
        emulator_url: str,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.data_dir = data_dir
        self.emulator_url = emulator_url
        suffix = uuid.uuid4().hex[:8]
        self.env = {
            "FLEXPIPE_DATA_DIR": str(data_dir),
            "FLEXPIPE_DATABASE_URL": database_url,
            "FLEXPIPE_BROKER_URL": broker_url,
            "FLEXPIPE_API_BASE_URL": emulator_url + "/v1",
            "FLEXPIPE_API_KEY": "sk-test-not-a-real-key",
            "FLEXPIPE_TIME_SCALE": str(TIME_SCALE),
            "FLEXPIPE_QUEUE": f"flexpipe-{suffix}",
            "FLEXPIPE_POLL_QUEUE": f"flexpipe-{suffix}.poll",
            "FLEXPIPE_CALLBACK_QUEUE": f"flexpipe-{suffix}",
            "FLEXPIPE_IMPORTS": "tests.integration.callbacks",
            "FLEXPIPE_LEARN_LATENCY": "false",
            # Jobs queue at the emulator far longer than the scaled default deadline allows.
            "FLEXPIPE_DEADLINE_FLEX": "360000",
            "FLEXPIPE_SWEEP_INTERVAL": "0.5",
            "FLEXPIPE_POLL_OVERDUE_AFTER": "10",
            "FLEXPIPE_SUBMIT_STALE_AFTER": "10",
            "FLEXPIPE_CALLBACK_OVERDUE_AFTER": "3",
            # A submit killed mid-call is retried after its lease; keep that short in tests.
            "FLEXPIPE_SUBMIT_LEASE": "5",
            **(extra_env or {}),
        }
        self.worker: subprocess.Popen[bytes] | None = None
        self.loglevel = "info"
        self.log_path = data_dir / "worker.log"

    # -- lifecycle -------------------------------------------------------------------------

    def activate(self) -> None:
        """Point this process's settings, Celery app and runtime at the stack."""
        for key in [k for k in os.environ if k.startswith("FLEXPIPE_")]:
            del os.environ[key]
        os.environ.update(self.env)
        from flexpipe.config.settings import configure

        configure()

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.activate()
        from flexpipe.config.settings import get_settings
        from flexpipe.migrations import upgrade
        from tests.integration import callbacks

        upgrade(get_settings().db_url)
        callbacks.create_table(self.store.engine)
        self.start_worker()

    def start_worker(self) -> None:
        from flexpipe.cli.services import worker_command

        env = {**os.environ, **self.env, "PYTHONPATH": str(ROOT)}
        with open(self.log_path, "ab") as log:
            self.worker = subprocess.Popen(
                worker_command(beat=True, concurrency=2, loglevel=self.loglevel),
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop_worker(self, sig: int | None = None) -> None:
        if self.worker is None:
            return
        if sig is None:
            self.worker.terminate()
        else:
            os.killpg(self.worker.pid, sig)
        try:
            self.worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.worker.pid, 9)
            self.worker.wait()
        self.worker = None

    def stop(self) -> None:
        """Stop the worker and put this process's settings back as the tests began."""
        self.stop_worker()
        from flexpipe.config.settings import configure
        from flexpipe.tasks.runtime import reset

        reset()
        for key in [k for k in os.environ if k.startswith("FLEXPIPE_")]:
            del os.environ[key]
        os.environ["FLEXPIPE_API_KEY"] = "sk-test-not-a-real-key"
        configure()

    # -- helpers ---------------------------------------------------------------------------

    @property
    def store(self) -> Any:
        from flexpipe.tasks.runtime import runtime

        return runtime().store

    def wait_terminal(self, job_ids: Iterable[str], timeout: float = 60.0) -> None:
        ids = list(job_ids)
        terminal = {s.value for s in TERMINAL}
        end = time.monotonic() + timeout
        while True:
            counts = self.store.status_counts(ids)
            if sum(n for s, n in counts.items() if s in terminal) == len(ids):
                return
            if time.monotonic() > end:
                raise AssertionError(
                    f"jobs not terminal after {timeout}s: {counts}\n--- worker log tail:\n"
                    + self.log_tail()
                )
            time.sleep(0.05)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def emulator(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return emulator_call(self.emulator_url, path, body)


def emulator_call(base: str, path: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        base + path,
        data=data,
        method="GET" if body is None else "POST",
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"null")
