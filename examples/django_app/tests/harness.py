"""The newsroom under test: flexpipe's settings for the test (the emulator, queues of the
run's own) and the newsroom's own Celery worker with beat, which runs flexpipe's tasks,
its sweeper and the callbacks, as it would in production."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flexpipe.testing import TIME_SCALE, Stack

EXAMPLE = Path(__file__).resolve().parents[1]
#: The repository root (flexpipe's checkout), on the newsroom worker's path.
ROOT = EXAMPLE.parents[1]

#: Long enough for the sweeper to re-send a callback it believes unsent (flexpipe's
#: callback_overdue_after is 60 s, times the stack's time scale), so counts are final.
SETTLE = 60 * TIME_SCALE + 0.5


class CeleryWorker:
    """``celery -A config.celery_app worker -B`` in a subprocess, logging to a file."""

    def __init__(self, env: dict[str, str], queues: list[str], data_dir: Path) -> None:
        self.env = env
        self.queues = queues
        self.data_dir = data_dir
        self.log_path = data_dir / "newsroom-worker.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [sys.executable, "-m", "celery", "-A", "config.celery_app", "worker", "-c", "2"]
        argv += ["-Q", ",".join(self.queues), "-B", "-s", str(self.data_dir / "beat-schedule")]
        argv += ["-l", "info", "--without-gossip", "--without-mingle", "--without-heartbeat"]
        env = {
            **os.environ,
            **self.env,
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "PYTHONPATH": os.pathsep.join([str(EXAMPLE), str(ROOT)]),
        }
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                argv,
                cwd=EXAMPLE,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait()
        self.process = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class Newsroom:
    stack: Stack
    worker: CeleryWorker

    def activate(self) -> None:
        """Point this process (the web side: views, the management command) at the stack."""
        self.stack.activate()

    def wait_until(self, condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
        end = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > end:
                raise AssertionError(
                    f"{what}: not so after {timeout:g}s\n--- newsroom worker:\n"
                    f"{self.worker.log_tail()}"
                )
            time.sleep(0.05)

    def settle(self) -> None:
        """Let any duplicate callback arrive before counting them."""
        time.sleep(SETTLE)
