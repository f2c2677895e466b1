"""flexpipe's tasks on a host's own Celery app: what ``register`` puts there, and the
start-up checks (one clear error each). No broker is contacted."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from celery import Celery

from flexpipe.config import celery as flexpipe_celery
from flexpipe.config.settings import configure
from flexpipe.errors import ConfigurationError
from flexpipe.tasks import check, register

REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture
def host() -> Iterator[Celery]:
    """A host app on Redis with flexpipe registered; flexpipe's own again afterwards."""
    configure()
    app = Celery("host", broker=REDIS, set_as_current=False)
    register(app)
    yield app
    flexpipe_celery.use_host(None)
    configure()


def test_register_puts_every_flexpipe_task_on_the_host_with_late_acks(host: Celery) -> None:
    names = {name for name in host.tasks if name.startswith("flexpipe.")}
    assert {"flexpipe.submit", "flexpipe.poll", "flexpipe.store", "flexpipe.sweep"} <= names
    assert names == {n for n in flexpipe_celery.app.tasks if n.startswith("flexpipe.")}
    for name in names:
        assert host.tasks[name].acks_late and host.tasks[name].reject_on_worker_lost, name
    assert host.tasks["flexpipe.poll"].max_retries == 30  # the database retry policy came too
    assert "flexpipe-sweep" in host.conf.beat_schedule
    check(host)  # all is well


def test_flexpipe_publishes_on_the_host_broker_when_its_own_is_not_set(host: Celery) -> None:
    assert flexpipe_celery.app.conf.broker_url == REDIS
    assert flexpipe_celery.app.conf.broker_transport is None


def test_a_different_flexpipe_broker_is_an_error(host: Celery) -> None:
    # Issue 10, item 3: callbacks sat in .flexpipe/broker while the host read Redis.
    configure(broker_url="filesystem://")
    expected = r"flexpipe publishes to filesystem:/+ but Celery app .host. consumes redis://"
    with pytest.raises(ConfigurationError, match=expected):
        check(host)


def test_tasks_without_late_acks_are_an_error(host: Celery) -> None:
    host.conf.task_annotations = {"flexpipe.poll": {"acks_late": False}}
    host.finalize()
    with pytest.raises(ConfigurationError, match=r"flexpipe.poll runs with acks_late=False"):
        check(host)


def test_tasks_rejected_on_worker_lost_off_is_an_error(host: Celery) -> None:
    host.conf.task_annotations = {"flexpipe.store": {"reject_on_worker_lost": False}}
    with pytest.raises(ConfigurationError, match=r"reject_on_worker_lost=False"):
        check(host)


def test_a_short_redis_visibility_timeout_is_an_error(host: Celery) -> None:
    host.conf.broker_transport_options = {"visibility_timeout": 300}
    with pytest.raises(ConfigurationError, match=r"visibility_timeout'\] of Celery app 'host'"):
        check(host)
