"""Test-run guards and shared fixtures.

At import: every ``FLEXPIPE_*`` variable is cleared (tests set their own), a dummy API
key is set, and any connection to a host that is not local fails, so no test can reach a
real API. Services: ``redis_url`` and ``postgres_url`` point at the real servers of this
machine; when one is down the test is skipped locally and fails in CI (``CI=true``).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import uuid
from collections.abc import Iterator

import pytest

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
