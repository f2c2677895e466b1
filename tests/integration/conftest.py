"""Fixtures for the integration tests: the emulator over HTTP and a whole flexpipe stack
(real worker subprocess) on each backend: ``services`` (Redis + PostgreSQL of this
machine) and ``embedded`` (SQLite + the filesystem broker)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from flexpipe.emulator import EmulatorConfig, run_in_thread
from tests.integration.stack import TIME_SCALE, Stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def emulator() -> Iterator[str]:
    config = EmulatorConfig(time_scale=TIME_SCALE, slots=0, seed=11)  # unlimited slots
    with run_in_thread(config) as handle:
        yield handle.url


@pytest.fixture(scope="session")
def openai_emulator() -> Iterator[str]:
    config = EmulatorConfig(flavor="openai", time_scale=TIME_SCALE, slots=16, seed=12)
    with run_in_thread(config) as handle:
        yield handle.url


def _backend_urls(request: pytest.FixtureRequest, backend: str, tmp: Path) -> tuple[str, str]:
    if backend == "embedded":
        return f"sqlite:///{tmp / 'flexpipe.db'}", "filesystem://"
    if backend == "services-rabbitmq":
        broker_url = rabbitmq_vhost(request)
    else:
        broker_url = f"{request.getfixturevalue('redis_server')}/0"
    postgres = request.getfixturevalue("postgres_server")
    name = f"flexpipe_{uuid.uuid4().hex[:12]}"
    import sqlalchemy as sa

    admin = sa.create_engine(postgres, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    request.addfinalizer(lambda: _drop_database(postgres, name))
    return postgres.rsplit("/", 1)[0] + f"/{name}", broker_url


def rabbitmq_vhost(request: pytest.FixtureRequest) -> str:
    """A vhost of its own on the shared RabbitMQ (deleted afterwards), so tests never see
    each other's queues and leave the server as they found it."""
    request.getfixturevalue("rabbitmq_server")
    vhost = f"flexpipe-{uuid.uuid4().hex[:12]}"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    request.addfinalizer(lambda: rabbitmqctl("delete_vhost", vhost))
    return f"amqp://guest:guest@127.0.0.1:5672/{vhost}"


def rabbitmqctl(*args: str) -> None:
    import subprocess

    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def _drop_database(admin_url: str, name: str) -> None:
    import sqlalchemy as sa

    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def make_stack(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    backend: str,
    emulator_url: str,
    extra_env: dict[str, str] | None = None,
    *,
    database_url: str | None = None,
    broker_url: str | None = None,
) -> Stack:
    """A started stack on ``backend``; ``database_url``/``broker_url`` replace the
    backend's (a disposable server's, for a test that harms it)."""
    tmp = tmp_path_factory.mktemp(f"stack-{backend}")
    if database_url is None or broker_url is None:
        default_db, default_broker = _backend_urls(request, backend, tmp)
        database_url = database_url or default_db
        broker_url = broker_url or default_broker
    stack = Stack(
        name=backend,
        data_dir=tmp,
        database_url=database_url,
        broker_url=broker_url,
        emulator_url=emulator_url,
        extra_env=extra_env,
    )
    stack.start()
    request.addfinalizer(stack.stop)
    return stack


@pytest.fixture(scope="module", params=["services", "embedded"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, emulator: str
) -> Stack:
    """A stack on the Doubleword-flavoured emulator, once per backend."""
    s = make_stack(request, tmp_path_factory, request.param, emulator)
    return s


@pytest.fixture
def live(stack: Stack) -> Iterator[Stack]:
    """The module's stack, made current for this test; emulator faults reset after it."""
    stack.activate()
    yield stack
    stack.emulator("/_emulator/faults", NO_FAULTS)


NO_FAULTS = {
    "create_429_rate": 0.0,
    "create_429_no_retry_after_rate": 0.0,
    "get_429_rate": 0.0,
    "create_5xx_rate": 0.0,
    "get_5xx_rate": 0.0,
    "fail_rate": 0.0,
    "read_lag_ms": 0.0,
    "read_once": False,
    "drop_rate": 0.0,
    "slow_ms": 0.0,
}
