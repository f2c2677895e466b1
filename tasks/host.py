"""flexpipe's tasks on the host's own Celery app: ``flexpipe.tasks.register(app)``.

An app that already runs Celery registers flexpipe's tasks on its app; its workers then
run them (``-Q celery,flexpipe,flexpipe.poll``, or a worker of their own), and flexpipe
publishes every message, callbacks included, on that app's broker. What flexpipe relies
on is checked when a worker of that app starts, one clear error each (:func:`check`).
"""

from __future__ import annotations

from typing import Any

from celery import Celery, Task, signals

from flexpipe.errors import ConfigurationError
from flexpipe.tasks import delivery

#: Task options copied from flexpipe's own tasks (their retry-on-database-error policy, and
#: the sweep's events being off).
_COPIED = (
    "autoretry_for",
    "retry_backoff",
    "retry_backoff_max",
    "retry_jitter",
    "max_retries",
    "send_events",
    "throws",
)
#: Options every flexpipe task needs on any app: each task is safe to run twice, so its
#: message is acknowledged only once it ran, and redelivered if its worker died.
REQUIRED = {"acks_late": True, "reject_on_worker_lost": True}
_REDIS_SCHEMES = ("redis://", "rediss://", "sentinel://", "redis+socket://")


def register(celery_app: Celery) -> Celery:
    """Put flexpipe's tasks on ``celery_app`` (the host's) and publish on its broker.

    Call it where the app is made (``config/celery_app.py``, Flask's ``celery_init_app``),
    after its configuration is given; nothing is read until the app is configured.
    flexpipe then uses ``celery_app``'s broker unless ``FLEXPIPE_BROKER_URL`` is set (if
    it is, it must be the same broker). Beat of that app also sends flexpipe's sweeper.
    When a worker of ``celery_app`` starts, :func:`check` runs and a failure stops it.
    Its workers record the callbacks they receive (:mod:`flexpipe.tasks.delivery`).
    Returns ``celery_app``.
    """
    from flexpipe.config import celery as flexpipe_celery

    for task in _flexpipe_tasks():
        cls = type(task)
        run = cls.__dict__["run"]
        bind = not isinstance(run, staticmethod)
        fun = run if bind else run.__func__
        options = {key: cls.__dict__[key] for key in _COPIED if key in cls.__dict__}
        options.update(REQUIRED)
        celery_app.task(name=task.name, bind=bind, **options)(fun)

    def add_schedule(**_: Any) -> None:
        settings = _settings()
        schedule = dict(celery_app.conf.beat_schedule or {})
        for name, entry in flexpipe_celery.beat_schedule(settings).items():
            schedule.setdefault(name, entry)
        celery_app.conf.beat_schedule = schedule

    if celery_app.configured:
        add_schedule()
    else:
        celery_app.on_after_configure.connect(add_schedule, weak=False)

    def on_worker_init(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is not celery_app:
            return
        try:
            check(celery_app)
        except ConfigurationError as exc:
            # Celery logs and swallows an Exception raised by a signal handler; this stops
            # the worker before it consumes anything, with the one line.
            raise SystemExit(f"flexpipe: {exc}") from None

    signals.worker_init.connect(on_worker_init, weak=False)
    delivery.connect(celery_app)  # its workers record the callbacks they receive
    flexpipe_celery.use_host(celery_app)
    return celery_app


def check(celery_app: Celery) -> None:
    """Check what flexpipe's tasks rely on in ``celery_app``; raise
    :class:`ConfigurationError` with one line for the first thing that is wrong.

    - flexpipe publishes on the broker this app consumes (so no callback waits on a
      broker that no worker of the app reads);
    - each of flexpipe's tasks has ``acks_late`` and ``reject_on_worker_lost``;
    - on Redis, the visibility timeout is above twice flexpipe's longest countdown.
    """
    from flexpipe.config import celery as flexpipe_celery

    settings = _settings()
    host_broker = str(celery_app.conf.broker_url or "")
    ours = str(flexpipe_celery.broker_config(settings)["broker_url"] or "")
    if _normal(ours) != _normal(host_broker):
        raise ConfigurationError(
            f"flexpipe publishes to {_safe(ours)} but Celery app {celery_app.main!r} consumes "
            f"{_safe(host_broker)}: its callbacks would never be received. Leave "
            "FLEXPIPE_BROKER_URL unset (flexpipe then uses the app's broker) or make them equal"
        )
    tasks = celery_app.tasks
    for task in _flexpipe_tasks():
        mine = tasks.get(task.name)
        if mine is None:
            raise ConfigurationError(
                f"task {task.name} is not registered on Celery app {celery_app.main!r}; "
                "call flexpipe.tasks.register(app)"
            )
        for option in REQUIRED:
            if not getattr(mine, option, False):
                raise ConfigurationError(
                    f"task {task.name} runs with {option}=False on Celery app "
                    f"{celery_app.main!r} (task_annotations?); flexpipe's tasks need "
                    f"{option}=True so a message lost with its worker is run again"
                )
    if host_broker.startswith(_REDIS_SCHEMES):
        options = celery_app.conf.broker_transport_options or {}
        timeout = float(options.get("visibility_timeout", 3600.0))
        longest = settings.longest_countdown
        if longest >= timeout / 2:
            raise ConfigurationError(
                f"broker_transport_options['visibility_timeout'] of Celery app "
                f"{celery_app.main!r} is {timeout:g}s; it must be above twice flexpipe's "
                f"longest countdown ({longest:g}s), or Redis redelivers waiting tasks again "
                "and again"
            )


def _flexpipe_tasks() -> list[Task]:
    from flexpipe.config.celery import app
    from flexpipe.tasks import remote, schedule, steps, sweeper  # noqa: F401  (they register tasks)

    return [task for name, task in sorted(app.tasks.items()) if name.startswith("flexpipe.")]


def _settings() -> Any:
    from flexpipe.config.settings import get_settings

    return get_settings()


def _normal(url: str) -> str:
    return url.rstrip("/")


def _safe(url: str) -> str:
    """A broker URL without its password, for error messages."""
    from kombu.utils.url import maybe_sanitize_url

    return str(maybe_sanitize_url(url))
