"""The newsroom's fixtures: a PostgreSQL test database of its own (``migrate`` creates
flexpipe's tables in it too), and the newsroom's Celery worker, which runs flexpipe's
tasks and the callbacks on Redis: there is no flexpipe worker."""

from __future__ import annotations

import uuid

import pytest
from harness import CeleryWorker, Newsroom

from flexpipe.contrib.django.settings import database_url
from flexpipe.testing import Stack


@pytest.fixture(scope="session")
def django_db_modify_db_settings() -> None:
    """A test database per session, so parallel runs on the shared server never meet."""
    from django.conf import settings

    name = f"test_newsroom_{uuid.uuid4().hex[:10]}"
    settings.DATABASES["default"].setdefault("TEST", {})["NAME"] = name


@pytest.fixture(scope="session")
def newsroom_stack(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    emulator: str,
    redis_server: str,
    django_db_setup: None,
) -> Newsroom:
    from django.db import connection

    tmp = tmp_path_factory.mktemp("newsroom")
    # The newsroom's own queue on the shared Redis: its callbacks go there.
    queue = f"newsroom-{uuid.uuid4().hex[:8]}"
    stack = Stack(
        name="newsroom",
        data_dir=tmp,
        database_url=database_url(connection.settings_dict),  # the test database
        broker_url="unused",
        emulator_url=emulator,
        extra_env={"FLEXPIPE_CALLBACK_QUEUE": queue, "FLEXPIPE_IMPORTS": ""},
    )
    del stack.env["FLEXPIPE_BROKER_URL"]  # flexpipe uses the newsroom's broker
    stack.activate()
    worker = CeleryWorker(
        {
            **stack.env,
            "NEWSROOM_DB_NAME": connection.settings_dict["NAME"],
            "NEWSROOM_BROKER_URL": f"{redis_server}/0",
            "NEWSROOM_QUEUE": queue,
        },
        queues=[queue, stack.env["FLEXPIPE_QUEUE"], stack.env["FLEXPIPE_POLL_QUEUE"]],
        data_dir=tmp,
    )
    worker.start()
    request.addfinalizer(stack.stop)
    request.addfinalizer(worker.stop)
    return Newsroom(stack, worker)


@pytest.fixture
def newsroom(newsroom_stack: Newsroom, transactional_db: None) -> Newsroom:
    """The running newsroom, made current; tests commit for real (the worker must see it)."""
    newsroom_stack.activate()
    return newsroom_stack
