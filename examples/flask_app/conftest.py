"""Fixtures for the Flask example's tests: a real flexpipe stack (worker subprocess with
beat) on the bundled emulator, once on Redis + PostgreSQL and once on the embedded
defaults, and the app's test client pointed at it.

Guards, as in the main suite: ``FLEXPIPE_*`` and ``FLASK_*`` variables are cleared at
import, the API key is a dummy, and connections to non-local hosts fail. A missing
service skips the tests locally and fails them when ``CI=true``.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

for _name in [n for n in os.environ if n.startswith(("FLEXPIPE_", "FLASK_"))]:
    del os.environ[_name]
os.environ["FLEXPIPE_API_KEY"] = "sk-test-not-a-real-key"
os.environ["OPENAI_API_KEY"] = "sk-test-not-a-real-key"
os.environ.pop("OPENAI_BASE_URL", None)

from flask.testing import FlaskClient  # noqa: E402

from examples.flask_app.app import create_app  # noqa: E402
from flexpipe.emulator import EmulatorConfig, run_in_thread  # noqa: E402
from flexpipe.testing import (  # noqa: E402
    POSTGRES_ADMIN_URL,
    REDIS_URL,
    TIME_SCALE,
    Stack,
    create_database,
    drop_database,
)

#: The repository root: the worker imports examples.flask_app.completions from there.
ROOT = Path(__file__).resolve().parents[2]
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


socket.socket.connect = _guarded_connect  # type: ignore[method-assign, assignment]


def service_missing(what: str) -> None:
    """Skip locally, fail in CI: these tests must really run there."""
    if IN_CI:
        pytest.fail(f"{what} is not reachable, and CI=true requires it", pytrace=False)
    pytest.skip(f"{what} is not reachable")


def _redis_alive() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _create_postgres_database(request: pytest.FixtureRequest) -> str:
    """A fresh database for this session, dropped at its end; its URL."""
    import sqlalchemy as sa

    try:
        url = create_database(POSTGRES_ADMIN_URL, "flask_example")
    except sa.exc.OperationalError:
        service_missing("PostgreSQL at 127.0.0.1:5432")
    request.addfinalizer(lambda: drop_database(POSTGRES_ADMIN_URL, url))
    return url


@pytest.fixture(scope="session")
def emulator() -> Iterator[str]:
    config = EmulatorConfig(time_scale=TIME_SCALE, slots=16, seed=21)
    with run_in_thread(config) as handle:
        yield handle.url


@pytest.fixture(scope="session", params=["services", "embedded"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, emulator: str
) -> Stack:
    """flexpipe with a worker that runs this app's callback, on one backend."""
    tmp = tmp_path_factory.mktemp(f"flask-{request.param}")
    if request.param == "services":
        if not _redis_alive():
            service_missing("Redis at 127.0.0.1:6379")
        database_url, broker_url = _create_postgres_database(request), f"{REDIS_URL}/0"
    else:
        database_url, broker_url = f"sqlite:///{tmp / 'flexpipe.db'}", "filesystem://"
    stack = Stack(
        name=request.param,
        data_dir=tmp,
        database_url=database_url,
        broker_url=broker_url,
        emulator_url=emulator,
        extra_env={
            "FLEXPIPE_IMPORTS": "examples.flask_app.completions",
            # The worker builds the app from the environment to find its database.
            "FLASK_DATABASE_URL": f"sqlite:///{tmp / 'app.db'}",
        },
        cwd=ROOT,
        pythonpath=[ROOT],
    )
    stack.start()
    request.addfinalizer(stack.stop)
    return stack


@pytest.fixture
def client(stack: Stack) -> FlaskClient:
    """The app's test client, its flexpipe calls going to ``stack``."""
    stack.activate()
    app = create_app({"TESTING": True, "DATABASE_URL": stack.env["FLASK_DATABASE_URL"]})
    return app.test_client()


@pytest.fixture
def app_database(client: FlaskClient) -> str:
    """The URL of the app's own database (where the callback records completions)."""
    url = client.application.config["DATABASE_URL"]
    assert isinstance(url, str)
    return url
