"""Test-run guards and shared fixtures.

At import: every ``FLEXPIPE_*`` variable is cleared (tests set their own), a dummy API
key is set, and any connection to a host that is not local fails, so no test can reach a
real API. Services: ``redis_server`` and ``postgres_url`` point at the shared servers of
this machine; when one is down the test is skipped locally and fails in CI (``CI=true``).

The shared servers are only for tests that leave them as they found them. A test that
flushes, stops, restarts or crashes a service takes a disposable one of its own
(``tests/services.py``): ``redis_factory(**options)`` / ``disposable_redis`` and
``postgres_factory(**settings)`` / ``disposable_postgres``. The session guard
(``_shared_services_untouched``) turns the run red if the shared Redis lost a sentinel key
or was restarted, or the shared PostgreSQL was restarted, while the tests ran.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests import services

for _name in [n for n in os.environ if n.startswith("FLEXPIPE_")]:
    del os.environ[_name]
os.environ["FLEXPIPE_API_KEY"] = "sk-test-not-a-real-key"
os.environ["OPENAI_API_KEY"] = "sk-test-not-a-real-key"
os.environ.pop("OPENAI_BASE_URL", None)

REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

_real_connect = socket.socket.connect


def _is_local(address: object) -> bool:
    if not isinstance(address, tuple):
        return True  # unix sockets
    host = str(address[0])
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guarded_connect(self: socket.socket, address: object) -> None:
    if not _is_local(address):
        raise ConnectionRefusedError(f"tests may only connect to local hosts, not {address!r}")
    _real_connect(self, address)  # type: ignore[arg-type]


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]


def service_missing(what: str) -> None:
    """Skip locally, fail in CI: integration tests must really run there."""
    if IN_CI:
        pytest.fail(f"{what} is not reachable, and CI=true requires it", pytrace=False)
    pytest.skip(f"{what} is not reachable")


def _redis_alive() -> bool:
    try:
        with socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=1) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_server() -> str:
    if not _redis_alive():
        service_missing(f"Redis at {REDIS_HOST}:{REDIS_PORT}")
    return f"redis://{REDIS_HOST}:{REDIS_PORT}"


@pytest.fixture(scope="session")
def rabbitmq_server() -> str:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=1) as conn:
            conn.sendall(b"AMQP\x00\x00\x09\x01")
            alive = conn.recv(8) != b""
    except OSError:
        alive = False
    if not alive:
        service_missing("RabbitMQ at 127.0.0.1:5672")
    return "amqp://guest:guest@127.0.0.1:5672"


@pytest.fixture(scope="session")
def postgres_server() -> str:
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(POSTGRES_ADMIN_URL)
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
    except Exception:
        service_missing("PostgreSQL at 127.0.0.1:5432")
    return POSTGRES_ADMIN_URL


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    import sqlalchemy as sa

    name = f"flexpipe_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield postgres_server.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# -- disposable servers (tests/services.py) ------------------------------------------------


@pytest.fixture
def redis_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[
    Callable[..., services.RedisServer]
]:
    """``redis_factory(options={...}, persistence=False)``: start a disposable
    ``redis-server``; every one started is killed when the test ends."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        service_missing("redis-server and redis-cli (for a disposable Redis)")
    started: list[services.RedisServer] = []

    def make(**kwargs: Any) -> services.RedisServer:
        server = services.RedisServer(tmp_path_factory.mktemp("redis"), **kwargs)
        started.append(server)
        server.start()
        return server

    yield make
    for server in started:
        server.kill()


@pytest.fixture
def disposable_redis(redis_factory: Callable[..., services.RedisServer]) -> services.RedisServer:
    """A running disposable Redis with nothing on disk."""
    return redis_factory()


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[services.PostgresTemplate]:
    """One initdb'd cluster per session (made on first use), copied by each server."""
    bindir = services.postgres_bindir()
    if bindir is None:
        service_missing("PostgreSQL's binaries (pg_config --bindir, for a disposable server)")
    assert bindir is not None
    template = services.PostgresTemplate(bindir)
    yield template
    template.remove()


@pytest.fixture
def postgres_factory(postgres_template: services.PostgresTemplate) -> Iterator[
    Callable[..., services.PostgresServer]
]:
    """``postgres_factory(settings={...})``: start a disposable PostgreSQL; every one
    started is killed and its files deleted when the test ends."""
    started: list[services.PostgresServer] = []

    def make(**kwargs: Any) -> services.PostgresServer:
        server = services.PostgresServer(postgres_template, **kwargs)
        started.append(server)
        server.start()
        return server

    yield make
    for server in started:
        server.remove()


@pytest.fixture
def disposable_postgres(
    postgres_factory: Callable[..., services.PostgresServer],
) -> services.PostgresServer:
    """A running disposable PostgreSQL (superuser ``postgres``, trust auth)."""
    return postgres_factory()


# -- the guard: the shared servers end the session as they began ----------------------------


@pytest.fixture(scope="session", autouse=True)
def _shared_services_untouched() -> Iterator[None]:
    """Fail the run (an error at the last test's teardown) if the shared Redis lost a
    sentinel key (db 15) or restarted, or the shared PostgreSQL restarted, during the
    session. A server that is down at the start is not watched (the tests that need it
    skip or fail on their own)."""
    guard = services.SharedServicesGuard(REDIS_HOST, REDIS_PORT, POSTGRES_ADMIN_URL)
    guard.start()
    yield
    harm = guard.check()
    services.kill_leftovers()
    if harm:
        pytest.fail("tests harmed the shared services: " + "; ".join(harm), pytrace=False)
