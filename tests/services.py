"""Disposable real servers for tests that stop, flush, restart or crash a service.

The shared Redis (127.0.0.1:6379) and PostgreSQL (127.0.0.1:5432) of the machine are
used only by tests that leave them as they found them. A fault that harms a server runs
against one of these instead: a real ``redis-server`` or PostgreSQL postmaster, started by
the test as a child process on a free port with its files in a temporary directory, and
killed when the test ends, whatever its outcome.

- :class:`RedisServer`: ``redis-server`` with nothing on disk unless asked; ``flushall``,
  ``stop``, ``kill``, ``restart`` only ever reach that instance.
- :class:`PostgresServer`: a cluster copied from one ``initdb``'d :class:`PostgresTemplate`
  per session (initdb runs once), trust auth, its unix socket in its own directory;
  ``stop``, ``kill`` (SIGKILL: a crash), ``restart``, ``read_only`` (a window in which
  every transaction is refused writes), ``set`` (``ALTER SYSTEM``) and low
  ``max_connections``.

The fixtures that hand these out are in ``tests/conftest.py`` (``redis_factory``,
``postgres_factory``, ``disposable_redis``, ``disposable_postgres``).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

#: The shared servers: nothing here may ever touch them.
SHARED_PORTS = frozenset({6379, 5432})
#: Seconds a server may take to come up or go down before the test fails.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
#: Attempts on fresh ports when a port was taken between probing and binding.
PORT_ATTEMPTS = 5
#: Every server started and not yet stopped, so a session can kill the leftovers.
_running: set[Any] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (never a shared one)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in SHARED_PORTS:
            return port


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def process_alive(pid: int) -> bool:
    """Running or exiting (a zombie has exited: it only waits to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def kill_leftovers() -> None:
    """Kill every server still running (a session's last safety net)."""
    for server in list(_running):
        with contextlib.suppress(Exception):
            server.kill()


class ServiceError(AssertionError):
    """A disposable server did not start or stop as asked."""


# -- Redis -------------------------------------------------------------------------------


class RedisServer:
    """A ``redis-server`` child process on its own port, in its own directory.

    ``options`` are passed as ``--name value`` (``{"maxmemory": "20mb",
    "maxmemory-policy": "noeviction"}``). Nothing is saved unless ``persistence`` is true
    (then RDB snapshots as Redis defaults to, and ``appendonly`` if given in options)."""

    def __init__(
        self,
        directory: Path,
        *,
        options: Mapping[str, str | int] | None = None,
        persistence: bool = False,
    ) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.options = {str(k): str(v) for k, v in (options or {}).items()}
        self.persistence = persistence
        self.port = free_port()
        self.log_path = directory / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None
        #: (went down, came back) for each restart.
        self.outages: list[tuple[datetime.datetime, datetime.datetime]] = []

    # -- addresses -------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def url(self, db: int = 0) -> str:
        """The ``redis://`` URL of database ``db`` on this instance."""
        return f"redis://{self.host}:{self.port}/{db}"

    def client(self, db: int = 0) -> Any:
        """A ``redis.Redis`` client for this instance (close it when done)."""
        import redis

        return redis.Redis(host=self.host, port=self.port, db=db, socket_timeout=10)

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.running and self.process else None

    def _argv(self) -> list[str]:
        argv = ["redis-server", "--port", str(self.port), "--bind", self.host,
                "--dir", str(self.directory), "--daemonize", "no", "--protected-mode", "yes"]
        if not self.persistence:
            argv += ["--save", "", "--appendonly", "no"]
        for name, value in self.options.items():
            argv += [f"--{name}", value]
        return argv

    def start(self) -> None:
        """Start the server (on a fresh port if the last one was taken meanwhile)."""
        if self.running:
            return
        for attempt in range(PORT_ATTEMPTS):
            if attempt:
                self.port = free_port()
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    self._argv(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    cwd=self.directory, start_new_session=True,
                )
            _running.add(self)
            end = time.monotonic() + START_TIMEOUT
            while time.monotonic() < end and self.process.poll() is None:
                if self.ping():
                    return
                time.sleep(0.02)
            self._reap()
        raise ServiceError(f"redis-server did not start\n{_tail(self.log_path)}")

    def ping(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def cli(self, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        """Run ``redis-cli`` against this instance (``stdin``: several commands in one
        session, run back to back)."""
        return subprocess.run(
            ["redis-cli", "-h", self.host, "-p", str(self.port), *args],
            input=stdin, capture_output=True, check=False, timeout=10,
        )

    def count(self, *args: str) -> int:
        """An integer reply (``count("llen", "queue")``), 0 when there is none."""
        out = self.cli(*args).stdout.strip()
        return int(out) if out.isdigit() else 0

    def flushall(self) -> None:
        """Wipe every key of this instance (and of no other)."""
        out = self.cli("flushall")
        if out.stdout.strip() != b"OK":
            raise ServiceError(f"FLUSHALL failed: {out.stdout!r} {out.stderr!r}")

    def stop(self, *, save: bool = False, pubsub_first: bool = False) -> None:
        """Shut the server down (``SHUTDOWN NOSAVE``, or ``SAVE``). ``pubsub_first``
        drops the pub/sub clients in the same session just before, so a client reads the
        end of its pub/sub sockets first and finds Redis gone while it tears down."""
        if self.process is None:
            return
        if self.process.poll() is None:
            shutdown = b"SHUTDOWN SAVE\n" if save else b"SHUTDOWN NOSAVE\n"
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.cli(stdin=(b"CLIENT KILL TYPE pubsub\n" if pubsub_first else b"") + shutdown)
        self._reap()

    def kill(self) -> None:
        """SIGKILL the server: nothing saved, connections dropped mid-reply."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        self._reap()

    def restart(self, down_for: float = 0.0, *, save: bool = False,
                pubsub_first: bool = False) -> None:
        """Stop, stay down ``down_for`` seconds, start on the same port (empty unless
        ``persistence``); the outage is appended to ``outages``."""
        down = _now()
        self.stop(save=save, pubsub_first=pubsub_first)
        time.sleep(down_for)
        self.start()
        self.outages.append((down, _now()))

    def _reap(self) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
        _running.discard(self)

    def log_tail(self, lines: int = 30) -> str:
        return _tail(self.log_path, lines)


# -- PostgreSQL --------------------------------------------------------------------------


def postgres_bindir() -> Path | None:
    """Where ``initdb``, ``postgres`` and ``pg_ctl`` are (``pg_config --bindir``)."""
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return None
    out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
    bindir = Path(out.stdout.strip())
    return bindir if (bindir / "initdb").exists() and (bindir / "postgres").exists() else None


def _server_user() -> str | None:
    """PostgreSQL refuses to run as root: run it as ``postgres`` then."""
    return "postgres" if os.geteuid() == 0 else None


def _private_dir(prefix: str) -> Path:
    """A directory the server's user owns. Not under pytest's tmp_path: that one is 0700
    root's, and the ``postgres`` user cannot enter it."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    user = _server_user()
    if user:
        shutil.chown(path, user, user)
    return path


class PostgresTemplate:
    """One ``initdb``'d cluster per session, copied for each server (initdb runs once,
    on first use)."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root: Path | None = None

    def data_dir(self) -> Path:
        if self.root is None:
            root = _private_dir("flexpipe-pg-template-")
            data = root / "data"
            user = _server_user()
            result = subprocess.run(
                [str(self.bindir / "initdb"), "-D", str(data), "-U", "postgres",
                 "--auth=trust", "--no-sync", "--no-instructions", "-E", "UTF8",
                 "--locale=C"],
                capture_output=True, text=True, check=False, cwd=root, user=user,
                group=user, timeout=120,
            )
            if result.returncode != 0:
                shutil.rmtree(root, ignore_errors=True)
                raise ServiceError(f"initdb failed:\n{result.stdout}\n{result.stderr}")
            self.root = root
        return self.root / "data"

    def remove(self) -> None:
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None


class PostgresServer:
    """A PostgreSQL postmaster, a child process of the test, on a free port.

    ``settings`` go into its ``postgresql.conf`` (``{"max_connections": 10}``); change
    them later with :meth:`set`. The cluster has trust auth; its superuser is
    ``postgres``. Its files and unix socket live in ``directory``, removed by
    :meth:`remove`."""

    #: Crash-safe for a killed process (the kernel keeps what was written), and faster.
    DEFAULTS: Mapping[str, str] = {"fsync": "off", "full_page_writes": "off"}

    def __init__(self, template: PostgresTemplate, *,
                 settings: Mapping[str, str | int | bool] | None = None) -> None:
        self.bindir = template.bindir
        self.directory = _private_dir("flexpipe-pg-")
        self.data_dir = self.directory / "data"
        self.log_path = self.directory / "postgres.log"
        self.user = _server_user()
        subprocess.run(["cp", "-a", str(template.data_dir()), str(self.data_dir)], check=True)
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write("\n# flexpipe tests\n")
            for name, value in {**self.DEFAULTS, **(settings or {})}.items():
                conf.write(f"{name} = {_conf_value(value)}\n")
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        #: (went down, came back) for each restart or crash.
        self.outages: list[tuple[datetime.datetime, datetime.datetime]] = []

    # -- addresses -------------------------------------------------------------------------

    @property
    def socket_dir(self) -> Path:
        return self.directory

    def url(self, database: str = "postgres", user: str = "postgres") -> str:
        """A SQLAlchemy URL (psycopg) of ``database`` over TCP on 127.0.0.1."""
        return f"postgresql+psycopg://{user}@127.0.0.1:{self.port}/{database}"

    @property
    def admin_url(self) -> str:
        return self.url()

    def connect(self, database: str = "postgres") -> Any:
        """An autocommit psycopg connection as the superuser over the unix socket (it
        gets a superuser-reserved slot when ``max_connections`` is reached)."""
        import psycopg

        return psycopg.connect(host=str(self.socket_dir), port=self.port, user="postgres",
                               dbname=database, autocommit=True, connect_timeout=10)

    def execute(self, sql: str, params: Any = None, database: str = "postgres") -> list[Any]:
        """Run one statement as the superuser and return its rows (if any)."""
        with self.connect(database) as conn:
            # Whatever window the server is in, the admin may write.
            conn.execute("SET default_transaction_read_only = off")
            cursor = conn.execute(sql, params)
            return list(cursor.fetchall()) if cursor.description else []

    def create_database(self, name: str | None = None, *, owner: str = "postgres") -> str:
        """Create a database (owned by ``owner``, a role :meth:`create_role` made) and
        return its URL as that role."""
        name = name or f"flexpipe_{uuid.uuid4().hex[:12]}"
        self.execute(f'CREATE DATABASE "{name}" OWNER "{owner}"')
        return self.url(name, owner)

    def create_role(self, name: str) -> None:
        """A login role that is not a superuser: it cannot take the slots
        ``superuser_reserved_connections`` keeps, so the admin still gets in when a
        test exhausts ``max_connections`` with it."""
        self.execute(f'CREATE ROLE "{name}" LOGIN')

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        """The postmaster's PID."""
        return self.process.pid if self.running and self.process else None

    def start(self) -> None:
        """Start the postmaster and wait until it accepts connections (after crash
        recovery, if it was killed)."""
        if self.running:
            return
        for attempt in range(PORT_ATTEMPTS):
            if attempt:
                self.port = free_port()
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    [str(self.bindir / "postgres"), "-D", str(self.data_dir),
                     "-p", str(self.port), "-h", "127.0.0.1", "-k", str(self.socket_dir)],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    cwd=self.directory, user=self.user, group=self.user,
                    start_new_session=True,
                )
            _running.add(self)
            end = time.monotonic() + START_TIMEOUT
            while time.monotonic() < end and self.process.poll() is None:
                if self._ready():
                    return
                time.sleep(0.02)
            self.kill()
        raise ServiceError(f"postgres did not start\n{_tail(self.log_path)}")

    def _ready(self) -> bool:
        # The postmaster writes its status as the last line of postmaster.pid.
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return (len(lines) >= 8 and lines[0].strip() == str(self.pid)
                and lines[7].strip() == "ready")

    def stop(self, mode: str = "fast") -> None:
        """Shut down: ``smart`` (wait for clients), ``fast`` (roll back and disconnect
        them, a clean shutdown) or ``immediate`` (no checkpoint: recovery at start)."""
        sig = {"smart": signal.SIGTERM, "fast": signal.SIGINT,
               "immediate": signal.SIGQUIT}[mode]
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()
                return
        self._reap_group()

    def kill(self) -> None:
        """Crash: SIGKILL the postmaster and every backend at once, mid-statement or
        mid-commit. The next :meth:`start` runs crash recovery."""
        if self.process is None:
            return
        self._reap_group(kill=True)

    def processes(self) -> set[int]:
        """The live processes of this server: the postmaster's children call setsid(),
        so they are found by their working directory, which is the data directory."""
        found = set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if Path(os.readlink(entry / "cwd")) == self.data_dir:
                    found.add(int(entry.name))
            except OSError:
                continue  # gone, exiting, or a zombie
        return found

    def _reap_group(self, *, kill: bool = False) -> None:
        """(SIGKILL and) wait until no process of the server is left: backends that
        outlive a killed postmaster keep its shared memory and would block the next
        start."""
        assert self.process is not None
        postmaster = self.process.pid
        seen = self.processes() | {postmaster}
        if kill:
            # The postmaster first, so that it cannot restart the backends it sees die.
            for pid in [postmaster, *(seen - {postmaster})]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.process.wait(timeout=STOP_TIMEOUT)
        end = time.monotonic() + STOP_TIMEOUT
        while left := {pid for pid in seen | self.processes() if process_alive(pid)}:
            seen |= left
            if time.monotonic() > end:
                raise ServiceError(f"postgres processes {left} did not exit")
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)
        self.process = None
        _running.discard(self)

    def restart(self, down_for: float = 0.0, *, mode: str = "fast", crash: bool = False) -> None:
        """Stop (or, with ``crash``, :meth:`kill`), stay down ``down_for`` seconds and
        start again on the same port; the outage is appended to ``outages``."""
        down = _now()
        if crash:
            self.kill()
        else:
            self.stop(mode)
        time.sleep(down_for)
        self.start()
        self.outages.append((down, _now()))

    def remove(self) -> None:
        """Kill the server if it runs and delete its files."""
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)

    # -- settings --------------------------------------------------------------------------

    def set(self, name: str, value: str | int | bool | None) -> None:
        """``ALTER SYSTEM SET name = value`` (``None``: reset) and reload: every session,
        the open ones too, has it once this returns. Settings that need a restart (such
        as ``max_connections``) take effect at the next :meth:`restart`."""
        if value is None:
            self.execute(f"ALTER SYSTEM RESET {name}")
        else:
            self.execute(f"ALTER SYSTEM SET {name} = {_conf_value(value)}")
        self.execute("SELECT pg_reload_conf()")
        expected = None if value is None else _conf_value(value).strip("'")
        context = self.execute("SELECT context FROM pg_settings WHERE name = %s", (name,))
        if expected is None or (context and context[0][0] == "postmaster"):
            return
        end = time.monotonic() + STOP_TIMEOUT
        while True:
            # A new session sees the file once the postmaster has reloaded it.
            with self.connect() as conn:
                shown = conn.execute(
                    "SELECT setting FROM pg_settings WHERE name = %s", (name,)
                ).fetchone()
            if shown and _same_setting(shown[0], expected):
                return
            if time.monotonic() > end:
                raise ServiceError(f"{name} is {shown}, not {expected}, after reload")
            time.sleep(0.02)

    def set_read_only(self, on: bool) -> None:
        """Make every transaction read-only (``default_transaction_read_only``), as a
        failover or a replica promoted late does: writes fail with SQLSTATE 25006."""
        self.set("default_transaction_read_only", on)

    @contextlib.contextmanager
    def read_only(self) -> Iterator[None]:
        """A window during which the server refuses writes."""
        self.set_read_only(True)
        try:
            yield
        finally:
            self.set_read_only(False)

    def set_max_connections(self, n: int) -> None:
        """Lower (or raise) ``max_connections``: a restart (connections are dropped)."""
        self.set("max_connections", n)
        self.restart()

    def postmaster_start_time(self) -> datetime.datetime:
        return self.execute("SELECT pg_postmaster_start_time()")[0][0]  # type: ignore[no-any-return]

    def log_tail(self, lines: int = 30) -> str:
        return _tail(self.log_path, lines)


def _conf_value(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def _same_setting(shown: str, expected: str) -> bool:
    aliases = {"on": "on", "true": "on", "off": "off", "false": "off"}
    return aliases.get(shown.lower(), shown) == aliases.get(expected.lower(), expected)


# -- the guard ---------------------------------------------------------------------------


class SharedServicesGuard:
    """Notices a Redis and a PostgreSQL being harmed between :meth:`start` and
    :meth:`check`: a sentinel key lost (a flush), a Redis ``run_id`` changed (a restart),
    a postmaster start time changed (a restart or a crash), or a server gone.

    ``redis_db`` holds the sentinel key (unique per guard, expiring after a week if the
    run is killed before :meth:`check` deletes it)."""

    def __init__(self, redis_host: str, redis_port: int, postgres_url: str, *,
                 redis_db: int = 15) -> None:
        self.redis_host = redis_host
        self.redis_port = redis_port
        self.redis_db = redis_db
        self.postgres_url = postgres_url.replace("postgresql+psycopg://", "postgresql://")
        self.key = f"flexpipe:test-guard:{os.getpid()}:{uuid.uuid4().hex}"
        self.value = uuid.uuid4().hex.encode()
        self.redis_run_id: str | None = None
        self.postgres_started: datetime.datetime | None = None

    def _redis(self) -> Any:
        import redis

        return redis.Redis(host=self.redis_host, port=self.redis_port, db=self.redis_db,
                           socket_timeout=10, socket_connect_timeout=2)

    def _postgres_started(self) -> datetime.datetime:
        import psycopg

        with psycopg.connect(self.postgres_url, connect_timeout=5) as conn:
            row = conn.execute("SELECT pg_postmaster_start_time()").fetchone()
        assert row is not None
        return row[0]  # type: ignore[no-any-return]

    def start(self) -> None:
        """Write the sentinel and note both servers' identities (a server that is down
        now is not watched)."""
        import redis

        try:
            with self._redis() as client:
                client.set(self.key, self.value, ex=7 * 24 * 3600)
                self.redis_run_id = str(client.info("server")["run_id"])
        except redis.RedisError:
            self.redis_run_id = None
        try:
            self.postgres_started = self._postgres_started()
        except Exception:
            self.postgres_started = None

    def check(self) -> list[str]:
        """What harm was done since :meth:`start` (empty: none); removes the sentinel."""
        import redis

        harm: list[str] = []
        if self.redis_run_id is not None:
            where = f"the Redis at {self.redis_host}:{self.redis_port}"
            try:
                with self._redis() as client:
                    if client.get(self.key) != self.value:
                        harm.append(f"{where} lost the sentinel key {self.key} "
                                    f"(db {self.redis_db})")
                    if str(client.info("server")["run_id"]) != self.redis_run_id:
                        harm.append(f"{where} was restarted (its run_id changed)")
                    client.delete(self.key)
            except redis.RedisError as exc:
                harm.append(f"{where} is no longer reachable: {exc}")
        if self.postgres_started is not None:
            where = "the PostgreSQL at " + self.postgres_url.rsplit("@", 1)[-1]
            try:
                started = self._postgres_started()
            except Exception as exc:
                harm.append(f"{where} is no longer reachable: {exc}")
            else:
                if started != self.postgres_started:
                    harm.append(f"{where} was restarted at {started} (it had started at "
                                f"{self.postgres_started})")
        return harm
