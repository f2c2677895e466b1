"""Fixtures for the integration tests: the emulator over HTTP and a whole flexpipe stack
(real worker subprocess) on each backend: ``services`` (Redis + PostgreSQL of this
machine) and ``embedded`` (SQLite + the filesystem broker)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from flexpipe.emulator import EmulatorConfig, run_in_thread
from flexpipe.testing import start_stack
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
    """:func:`flexpipe.testing.start_stack` on this machine's services (which skip locally
    and fail in CI when missing), stopped at the end of the requesting scope;
    ``database_url``/``broker_url`` replace the backend's (a disposable server's, for a
    test that harms it)."""
    services: dict[str, str] = {}
    if backend == "services-rabbitmq":  # PostgreSQL as for "services", a vhost of its own
        backend, broker_url = "services", broker_url or rabbitmq_vhost(request)
    if backend == "services" and broker_url is None:
        services["redis_url"] = request.getfixturevalue("redis_server")
    if backend == "services" and database_url is None:
        services["postgres_admin_url"] = request.getfixturevalue("postgres_server")
    stack = start_stack(
        backend,
        tmp_path_factory.mktemp(f"stack-{backend}"),
        emulator_url,
        database_url=database_url,
        broker_url=broker_url,
        extra_env=extra_env,
        stack_class=Stack,
        **services,
    )
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
