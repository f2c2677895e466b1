"""A running flexpipe for tests, an app's or flexpipe's own: settings, a migrated database,
a real worker subprocess (with embedded beat), on a database and broker of your choosing.

``Stack`` points this process (the "app" side: ``flexpipe.tasks.api``) and a ``celery
worker`` subprocess at the same database, broker and emulator::

    from flexpipe.emulator import EmulatorConfig, run_in_thread
    from flexpipe.testing import TIME_SCALE, start_stack

    with run_in_thread(EmulatorConfig(time_scale=TIME_SCALE)) as emulator:
        stack = start_stack("embedded", tmp_dir, emulator.url)
        ...
        stack.stop()

Imports no pytest: use it from your own fixtures.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flexpipe.states import TERMINAL
from flexpipe.store.admin import create_database, drop_database

if TYPE_CHECKING:
    from flexpipe.store import Store

__all__ = [
    "POSTGRES_ADMIN_URL",
    "REDIS_URL",
    "TIME_SCALE",
    "Stack",
    "create_database",
    "drop_database",
    "emulator_call",
    "start_stack",
]

#: Emulator and flexpipe run 100x faster than real time: a 60 s flex wait takes 0.6 s.
TIME_SCALE = 0.01
#: The services a ``"services"`` stack uses unless told otherwise.
REDIS_URL = "redis://127.0.0.1:6379"
POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


class Stack:
    """flexpipe on one database and broker, with a worker subprocess (and embedded beat).

    ``imports`` are the modules the worker imports for callback tasks (``FLEXPIPE_IMPORTS``);
    the worker runs in ``cwd`` (default: this process's) with ``pythonpath`` prepended, so
    it can import the app's modules. :meth:`prepare` runs after the migrations, before the
    worker starts (a subclass creates its own tables there).
    """

    def __init__(
        self,
        *,
        name: str,
        data_dir: Path,
        database_url: str,
        broker_url: str,
        emulator_url: str,
        extra_env: dict[str, str] | None = None,
        imports: str = "",
        cwd: Path | None = None,
        pythonpath: Sequence[Path] = (),
    ) -> None:
        self.name = name
        self.data_dir = data_dir
        self.emulator_url = emulator_url
        self.cwd = cwd or Path.cwd()
        self.pythonpath = list(pythonpath)
        #: Run when the stack stops (e.g. drop its database).
        self.cleanups: list[Callable[[], None]] = []
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
            "FLEXPIPE_IMPORTS": imports,
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
        """Migrate the database, run :meth:`prepare`, start the worker."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.activate()
        from flexpipe.config.settings import get_settings
        from flexpipe.migrations import upgrade

        upgrade(get_settings().db_url)
        self.prepare()
        self.start_worker()

    def prepare(self) -> None:
        """Run after the migrations, before the worker starts; nothing by default."""

    def start_worker(self) -> None:
        from flexpipe.cli.services import worker_command

        paths = [str(p) for p in self.pythonpath]
        if os.environ.get("PYTHONPATH"):
            paths.append(os.environ["PYTHONPATH"])
        env = {**os.environ, **self.env, "PYTHONPATH": os.pathsep.join(paths)}
        with open(self.log_path, "ab") as log:
            self.worker = subprocess.Popen(
                worker_command(beat=True, concurrency=2, loglevel=self.loglevel),
                cwd=self.cwd,
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
        """Stop the worker, run the cleanups, put this process's settings back."""
        self.stop_worker()
        from flexpipe.config.settings import configure
        from flexpipe.tasks.runtime import reset

        reset()
        while self.cleanups:
            self.cleanups.pop()()
        for key in [k for k in os.environ if k.startswith("FLEXPIPE_")]:
            del os.environ[key]
        os.environ["FLEXPIPE_API_KEY"] = "sk-test-not-a-real-key"
        configure()

    # -- helpers ---------------------------------------------------------------------------

    @property
    def store(self) -> Store:
        """This process's store, on the stack's database once :meth:`activate` ran."""
        from flexpipe.tasks.runtime import runtime

        return runtime().store

    def wait_terminal(self, job_ids: Iterable[str], timeout: float = 60.0) -> None:
        """Wait until every job is terminal; raise AssertionError with the worker's log."""
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
        """The last lines of the worker's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def emulator(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """Call the emulator's admin API (GET, or POST with ``body``)."""
        return emulator_call(self.emulator_url, path, body)


def emulator_call(base: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """Call an emulator's admin API at ``base`` (GET, or POST with ``body``); its JSON."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        base + path,
        data=data,
        method="GET" if body is None else "POST",
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"null")


def start_stack(
    backend: str,
    data_dir: Path,
    emulator_url: str,
    *,
    extra_env: dict[str, str] | None = None,
    database_url: str | None = None,
    broker_url: str | None = None,
    redis_url: str = REDIS_URL,
    postgres_admin_url: str = POSTGRES_ADMIN_URL,
    stack_class: type[Stack] = Stack,
    **options: Any,
) -> Stack:
    """Start a stack on ``backend``: ``"embedded"`` (SQLite in ``data_dir`` and the
    filesystem broker) or ``"services"`` (a fresh PostgreSQL database, dropped when the
    stack stops, and Redis database 0). ``database_url``/``broker_url`` replace the
    backend's; ``options`` go to the stack class."""
    if backend not in ("embedded", "services"):
        raise ValueError(f"backend must be 'embedded' or 'services', not {backend!r}")
    created = None
    if database_url is None:
        if backend == "embedded":
            database_url = f"sqlite:///{data_dir / 'flexpipe.db'}"
        else:
            database_url = created = create_database(postgres_admin_url)
    if broker_url is None:
        broker_url = "filesystem://" if backend == "embedded" else f"{redis_url}/0"
    stack = stack_class(
        name=backend,
        data_dir=data_dir,
        database_url=database_url,
        broker_url=broker_url,
        emulator_url=emulator_url,
        extra_env=extra_env,
        **options,
    )
    if created is not None:
        stack.cleanups.append(lambda: drop_database(postgres_admin_url, created))
    try:
        stack.start()
    except BaseException:
        stack.stop()
        raise
    return stack
