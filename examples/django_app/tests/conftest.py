"""The newsroom's fixtures: a file database the worker process can open, and the two
workers (flexpipe's and the newsroom's) on each backend: ``services`` (Redis + PostgreSQL)
and ``embedded`` (SQLite + flexpipe's filesystem broker)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest
from harness import CeleryWorker, Newsroom

from tests.integration.conftest import make_stack


@pytest.fixture(scope="session")
def django_db_modify_db_settings(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Test on an SQLite file, not in memory, so the newsroom's worker can open it too."""
    from django.conf import settings

    path = tmp_path_factory.mktemp("newsroom") / "newsroom.sqlite3"
    settings.DATABASES["default"].setdefault("TEST", {})["NAME"] = str(path)


@pytest.fixture(scope="session", params=["services", "embedded"])
def newsroom_stack(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    emulator: str,
    django_db_setup: None,
) -> Newsroom:
    from django.db import connection

    # A queue of our own on the shared Redis: callbacks go there, the newsroom reads it.
    callback_queue = f"newsroom-{uuid.uuid4().hex[:8]}"
    env = {"FLEXPIPE_CALLBACK_QUEUE": callback_queue, "FLEXPIPE_IMPORTS": ""}
    # flexpipe's worker is no Django process: with DJANGO_SETTINGS_MODULE inherited,
    # Celery's Django fix-up in it would try to import newsroom.settings.
    with environ_without("DJANGO_SETTINGS_MODULE"):
        stack = make_stack(request, tmp_path_factory, request.param, emulator, env)
    worker = CeleryWorker(
        {**stack.env, "NEWSROOM_DB_PATH": connection.settings_dict["NAME"]},
        stack.data_dir / "newsroom-worker.log",
    )
    worker.start()
    request.addfinalizer(worker.stop)
    return Newsroom(stack, worker)


@pytest.fixture
def newsroom(newsroom_stack: Newsroom, transactional_db: None) -> Newsroom:
    """The running newsroom, made current; tests commit for real (the workers must see it)."""
    newsroom_stack.activate()
    return newsroom_stack


@contextlib.contextmanager
def environ_without(name: str) -> Iterator[None]:
    """Remove an environment variable for the duration of a ``with`` block."""
    value = os.environ.pop(name, None)
    try:
        yield
    finally:
        if value is not None:
            os.environ[name] = value
