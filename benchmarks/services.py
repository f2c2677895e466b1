"""The processes a benchmark run starts, and their clean-up: an emulator process, a fresh
PostgreSQL database, flexpipe's real ``celery worker`` (with beat), the blocking-task worker.

Everything talks to 127.0.0.1 only. Each ``start`` registers its own ``stop`` with a
:class:`Cleanup`, which runs them in reverse order even when the run fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REDIS_URL = "redis://127.0.0.1:6379/7"
POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
MODEL = "Qwen/Qwen3-30B-A3B-Instruct-2507"


class Cleanup:
    """A stack of undo actions, run last-in first-out; errors are printed, not raised."""

    def __init__(self) -> None:
        self._actions: list[tuple[str, Callable[[], None]]] = []

    def push(self, name: str, action: Callable[[], None]) -> None:
        self._actions.append((name, action))

    def run(self) -> None:
        while self._actions:
            name, action = self._actions.pop()
            try:
                action()
            except Exception as exc:  # keep cleaning up
                print(f"  cleanup {name}: {exc}", file=sys.stderr)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM the process group we started (``start_new_session``), then SIGKILL it."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    # Children of a prefork pool that outlived their parent: same session, same group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


# -- the emulator -------------------------------------------------------------------------


class Emulator:
    """``python -m flexpipe.emulator`` in a process of its own."""

    def __init__(
        self,
        *,
        time_scale: float,
        latency: str,
        log_dir: Path,
        seed: int = 0,
        name: str = "emulator",
    ) -> None:
        self.argv = [
            sys.executable, "-m", "flexpipe.emulator",
            "--host", "127.0.0.1", "--port", "0",
            "--time-scale", f"{time_scale:g}", "--slots", "0", "--seed", str(seed),
            "--latency-flex", latency, "--queue-delay-flex", "fixed:0",
        ]  # fmt: skip
        self.time_scale = time_scale
        self.latency = latency
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def start(self, cleanup: Cleanup) -> Emulator:
        log = open(self.log_path, "wb")  # noqa: SIM115 - kept open for the child
        self.proc = subprocess.Popen(
            self.argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, start_new_session=True
        )
        cleanup.push("emulator", lambda: stop_process(self.proc) if self.proc else None)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/v1", line)
        if not match:
            raise RuntimeError(f"emulator did not start: {line!r}; see {self.log_path}")
        self.url = f"http://127.0.0.1:{match.group(1)}"
        return self

    def call(self, path: str, body: dict[str, Any] | None = None, timeout: float = 120) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method="GET" if body is None else "POST",
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read() or b"null")

    def totals(self) -> dict[str, Any]:
        return self.call("/_emulator/stats?responses=0")["totals"]  # type: ignore[no-any-return]

    def responses(self, tag: str | None = None) -> dict[str, dict[str, Any]]:
        """Per-response stats, optionally only those created with ``metadata.bench == tag``."""
        items: dict[str, dict[str, Any]] = self.call("/_emulator/stats")["responses"]
        if tag is None:
            return items
        return {k: v for k, v in items.items() if (v.get("metadata") or {}).get("bench") == tag}


# -- PostgreSQL -----------------------------------------------------------------------------


def create_database(cleanup: Cleanup) -> tuple[str, str]:
    """A fresh database ``flexpipe_bench_<hex>`` migrated to head; returns (name, url)."""
    import sqlalchemy as sa

    from flexpipe.migrations import upgrade

    name = f"flexpipe_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    cleanup.push(f"database {name}", lambda: drop_database(name))
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    upgrade(url)
    return name, url


def drop_database(name: str) -> None:
    import sqlalchemy as sa

    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


# -- Redis ----------------------------------------------------------------------------------


def delete_redis_keys(*fragments: str) -> None:
    """Delete the keys of our queues (every key of our Redis database that contains one
    of ``fragments``; ``*`` for all of them: the database is the benchmark's own)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        for fragment in fragments:
            keys = list(client.scan_iter(match=f"*{fragment}*", count=1000))
            for start in range(0, len(keys), 500):
                client.delete(*keys[start : start + 500])
    finally:
        client.close()


# -- flexpipe ------------------------------------------------------------------------------


#: How often flexpipe's worker processes re-read learned latencies in the benchmark (s).
ESTIMATE_REFRESH = 5.0


class FlexpipeStack:
    """flexpipe on Redis + a fresh PostgreSQL database, with a real worker and beat.

    This process becomes the app side (``flexpipe.tasks.api``); the worker is a subprocess in a
    session of its own, so its processes (main, pool children) are found by session id.
    Beat runs as its own process (``flexpipe beat``, as docs/deploy.md recommends), also in
    a session of its own: figure 3 reports its memory beside the worker's.
    """

    def __init__(
        self,
        *,
        emulator: Emulator,
        work_dir: Path,
        concurrency: int,
        time_scale: float,
        extra_env: dict[str, str] | None = None,
        name: str = "flexpipe",
    ) -> None:
        self.emulator = emulator
        self.work_dir = work_dir / name
        self.concurrency = concurrency
        self.suffix = uuid.uuid4().hex[:8]
        self.queue = f"flexbench-{self.suffix}"
        self.node = f"flexbench-{self.suffix}@%h"
        self.time_scale = time_scale
        self.db_name = ""
        self.env: dict[str, str] = {
            "FLEXPIPE_DATA_DIR": str(self.work_dir),
            "FLEXPIPE_BROKER_URL": REDIS_URL,
            "FLEXPIPE_API_BASE_URL": emulator.base_url,
            "FLEXPIPE_API_KEY": "sk-bench-not-a-real-key",
            "FLEXPIPE_MODEL": MODEL,
            "FLEXPIPE_TIME_SCALE": f"{time_scale:g}",
            "FLEXPIPE_QUEUE": self.queue,
            "FLEXPIPE_POLL_QUEUE": f"{self.queue}.poll",
            "FLEXPIPE_CALLBACK_QUEUE": self.queue,
            "FLEXPIPE_LEARN_LATENCY": "true",
            "FLEXPIPE_ESTIMATE_REFRESH": f"{ESTIMATE_REFRESH:g}",
            **(extra_env or {}),
        }
        self.worker: subprocess.Popen[bytes] | None = None
        self.beat: subprocess.Popen[bytes] | None = None
        self.log_path = self.work_dir / "worker.log"

    @property
    def sid(self) -> int:
        assert self.worker is not None
        return self.worker.pid

    @property
    def beat_sid(self) -> int:
        assert self.beat is not None
        return self.beat.pid

    def start(self, cleanup: Cleanup, *, worker: bool = True, wait: bool = True) -> FlexpipeStack:
        """Create the database and start the worker and beat; ``wait=False`` returns before
        the worker answers (call :meth:`ready` before relying on it: workers boot in
        parallel that way)."""
        from flexpipe.store import Store

        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.db_name, url = create_database(cleanup)
        self.env["FLEXPIPE_DATABASE_URL"] = url
        # Our own engine for reads (the app side's runtime follows whichever stack is active).
        self.store = Store.from_url(url)
        cleanup.push("flexpipe engine", self.store.dispose)
        self.activate()
        cleanup.push("flexpipe app side", deactivate)
        cleanup.push("flexpipe queues", lambda: delete_redis_keys(self.suffix))
        if worker:
            self.start_worker(cleanup, wait=wait)
        return self

    def ready(self) -> FlexpipeStack:
        assert self.worker is not None
        wait_for_worker(self.node, self.worker, self.log_path)
        return self

    def sql(self, query: str, **params: Any) -> list[Any]:
        import sqlalchemy as sa

        with self.store.engine.connect() as conn:
            return list(conn.execute(sa.text(query), params))

    def activate(self) -> None:
        """Point this process's settings, Celery app and runtime at the stack."""
        for key in [k for k in os.environ if k.startswith("FLEXPIPE_")]:
            del os.environ[key]
        os.environ.update(self.env)
        from flexpipe.config.settings import configure

        configure()

    def start_worker(self, cleanup: Cleanup, *, wait: bool = True) -> None:
        from flexpipe.cli.services import worker_command

        argv = worker_command(concurrency=self.concurrency, loglevel="warning")
        argv += ["-n", self.node]
        env = {**os.environ, **self.env, "PYTHONPATH": str(ROOT)}
        beat = [sys.executable, "-m", "flexpipe.cli", "beat", "--loglevel", "warning"]
        with open(self.log_path, "ab") as log:
            self.worker = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
            self.beat = subprocess.Popen(
                beat, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        cleanup.push("flexpipe worker", self.stop_worker)
        if wait:
            self.ready()

    def stop_worker(self) -> None:
        for proc in (self.beat, self.worker):
            if proc is not None:
                stop_process(proc)
        self.worker = self.beat = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def deactivate() -> None:
    from flexpipe.tasks.runtime import reset

    reset()


def wait_for_worker(
    node: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60
) -> None:
    """Wait until the worker answers a ping (it consumes from its queues then)."""
    from celery import Celery

    hostname = node.replace("%h", os.uname().nodename)
    pinger = Celery("flexbench-ping", broker=REDIS_URL, set_as_current=False)
    end = time.monotonic() + timeout
    try:
        while time.monotonic() < end:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited with {proc.returncode}; see {log}")
            replies = pinger.control.ping(destination=[hostname], timeout=0.5)
            if replies:
                return
        raise RuntimeError(f"worker {hostname} did not answer a ping in {timeout}s; see {log}")
    finally:
        pinger.close()


# -- the blocking-task worker ---------------------------------------------------------------


class BlockingWorker:
    """``celery -A benchmarks.blocking worker``: one task per job that blocks until done."""

    def __init__(
        self, *, emulator: Emulator, work_dir: Path, concurrency: int, time_scale: float
    ) -> None:
        self.suffix = uuid.uuid4().hex[:8]
        self.queue = f"flexbench-blocking-{self.suffix}"
        self.node = f"flexbench-blocking-{self.suffix}@%h"
        self.done_key = f"flexbench-blocking-{self.suffix}.done"
        self.concurrency = concurrency
        self.log_path = work_dir / "blocking-worker.log"
        self.env = {
            "BENCH_BROKER_URL": REDIS_URL,
            "BENCH_QUEUE": self.queue,
            "BENCH_DONE_KEY": self.done_key,
            "BENCH_BASE_URL": emulator.base_url,
            "BENCH_TIME_SCALE": f"{time_scale:g}",
            "BENCH_MODEL": MODEL,
        }
        self.worker: subprocess.Popen[bytes] | None = None

    @property
    def sid(self) -> int:
        assert self.worker is not None
        return self.worker.pid

    @property
    def beat_sid(self) -> int:
        assert self.beat is not None
        return self.beat.pid

    def start(self, cleanup: Cleanup, *, wait: bool = True) -> BlockingWorker:
        argv = [
            sys.executable, "-m", "celery", "-A", "benchmarks.blocking", "worker",
            "-Q", self.queue, "-c", str(self.concurrency), "-l", "warning", "-n", self.node,
        ]  # fmt: skip
        env = {**os.environ, **self.env, "PYTHONPATH": str(ROOT)}
        with open(self.log_path, "ab") as log:
            self.worker = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        # Last in, first out: the worker stops (and gives back what it prefetched) first.
        cleanup.push("blocking queues", lambda: delete_redis_keys(self.suffix))
        cleanup.push("blocking worker", self.stop)
        if wait:
            self.ready()
        return self

    def ready(self) -> BlockingWorker:
        assert self.worker is not None
        wait_for_worker(self.node, self.worker, self.log_path)
        return self

    def stop(self) -> None:
        if self.worker is not None:
            stop_process(self.worker)
            self.worker = None
