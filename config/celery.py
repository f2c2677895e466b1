"""The Celery app: ``celery -A flexpipe.config.celery worker|beat|flower``.

JSON only, no result backend (outputs live in flexpipe's own tables), late acks with
reject-on-worker-lost (every task is idempotent), polls on their own queue, and a beat
schedule that runs the sweeper.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, signals

from flexpipe.config import kombu_redis, redis_memory, worker_exit
from flexpipe.config.beat import BeatWatch
from flexpipe.config.settings import Settings, get_settings, on_configure
from flexpipe.errors import ConfigurationError


def broker_options(settings: Settings) -> dict[str, Any]:
    """Transport options; for the embedded broker, the folders it keeps messages in."""
    if settings.embedded_broker:
        root = (settings.data_dir / "broker").resolve()
        for sub in ("messages", "processed", "control"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(root / "messages"),
            "data_folder_out": str(root / "messages"),
            "processed_folder": str(root / "processed"),
            "control_folder": str(root / "control"),
            "store_processed": False,
            "polling_interval": 0.05,
        }
    return {
        "visibility_timeout": settings.visibility_timeout,
        # A message a killed worker had taken comes back once it is visibility_timeout old,
        # but kombu 5.7 scans for such messages only on every 10th 10-second tick (about
        # 100 s); scan on every tick, so it comes back within 10 s of being due. (Older
        # kombu has that throttle fixed and ignores the option.)
        "unacked_restore_throttle": 1,
    }


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """What beat sends: the sweeper, the prune and the scheduled classification job (the
    last two when configured)."""
    schedule: dict[str, dict[str, Any]] = {
        "flexpipe-sweep": {
            "task": "flexpipe.sweep",
            "schedule": settings.sweep_interval,
            "options": {"expires": settings.sweep_interval},
        }
    }
    if settings.retention:
        schedule["flexpipe-prune"] = {
            "task": "flexpipe.prune",
            "schedule": settings.retention_interval,
            "options": {"expires": settings.retention_interval},
        }
    if settings.classify_schedule:
        # Expires after one interval: a run that waited that long is replaced by the next.
        schedule["flexpipe-classify"] = {
            "task": "flexpipe.classify_job",
            "schedule": settings.classify_schedule,
            "options": {"expires": settings.classify_schedule},
        }
    return schedule


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery configuration flexpipe's tasks rely on, from flexpipe's settings."""
    return {
        **broker_config(settings),
        "broker_connection_retry_on_startup": True,
        "result_backend": None,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_acks_late": True,
        # No task may hang a worker: past the soft limit it is retried (the flow counts
        # that as a failure of the job), past the hard one its process is replaced.
        "task_soft_time_limit": settings.task_soft_time_limit,
        "task_time_limit": settings.task_time_limit,
        "task_reject_on_worker_lost": True,
        "task_default_queue": settings.queue,
        "task_routes": {
            "flexpipe.poll": {"queue": settings.poll_queue},
            "flexpipe.poll_many": {"queue": settings.poll_queue},
        },
        "task_publish_retry_policy": {
            "max_retries": 3,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        "worker_prefetch_multiplier": 4,
        "worker_eta_task_limit": settings.worker_eta_task_limit,
        "worker_send_task_events": True,
        "task_send_sent_event": settings.task_sent_events,
        "worker_hijack_root_logger": False,
        "beat_schedule": beat_schedule(settings),
        "include": [
            "flexpipe.tasks.steps",
            "flexpipe.tasks.remote",
            "flexpipe.tasks.sweeper",
            "flexpipe.tasks.schedule",
            "flexpipe.tasks.retention",
            *settings.import_list,
        ],
    }


def broker_config(settings: Settings) -> dict[str, Any]:
    """Where flexpipe publishes: its own broker, or the host's when its tasks run on a host
    Celery app (:func:`flexpipe.tasks.register`) and ``FLEXPIPE_BROKER_URL`` is not set."""
    host = _host
    if host is not None and "broker_url" not in settings.model_fields_set:
        return {
            "broker_url": host.conf.broker_url,
            "broker_transport": host.conf.broker_transport,
            "broker_transport_options": dict(host.conf.broker_transport_options or {}),
        }
    return {
        "broker_url": settings.broker_url,
        # The embedded broker writes messages atomically (see config/broker.py).
        "broker_transport": (
            "flexpipe.config.broker:Transport" if settings.embedded_broker else None
        ),
        "broker_transport_options": broker_options(settings),
        **rabbitmq_config(settings),
    }


def rabbitmq_config(settings: Settings) -> dict[str, Any]:
    """On RabbitMQ: quorum queues (replicated, survive a node restart) and Celery's native
    delayed delivery, so a countdown (a poll's wait, a retry's backoff) waits in RabbitMQ,
    not unacked in a worker's memory, where RabbitMQ's ``consumer_timeout`` (30 min) would
    close the channel and a worker restart would redeliver it early. Native delayed
    delivery needs topic exchanges, so each queue gets one (``<queue>.topic``: an app that
    sends by name declares the direct exchange of the queue's own name, which must differ).
    """
    if not settings.broker_url.startswith(("amqp://", "amqps://", "pyamqp://")):
        # Celery's defaults, so configuring another broker after RabbitMQ undoes it.
        return {
            "task_queues": None,
            "task_default_exchange": None,
            "task_default_exchange_type": "direct",
            "task_default_routing_key": None,
            "task_default_queue_type": "classic",
        }
    from kombu.entity import Queue

    from flexpipe.config import rabbitmq

    rabbitmq.install()  # countdowns under a second (see config/rabbitmq.py)

    quorum = {"x-queue-type": "quorum"}
    queues = [
        Queue(name, _topic(name), routing_key=name, queue_arguments=quorum)  # type: ignore[no-untyped-call]
        # Not the callback queue: it belongs to whoever consumes it (a host's "celery" queue
        # is classic, and redeclaring it as quorum would fail).
        for name in (settings.queue, settings.poll_queue)
    ]
    return {
        "task_queues": queues,
        "task_default_exchange": _topic(settings.queue).name,
        "task_default_exchange_type": "topic",
        "task_default_routing_key": settings.queue,
        "task_default_queue_type": "quorum",
        "broker_native_delayed_delivery_queue_type": "quorum",
        "worker_detect_quorum_queues": True,
        "broker_transport_options": {"confirm_publish": True},
    }


def _topic(queue: str) -> Any:
    from kombu.entity import Exchange

    return Exchange(f"{queue}.topic", type="topic")  # type: ignore[no-untyped-call]


#: The host's Celery app that runs flexpipe's tasks, once :func:`flexpipe.tasks.register`
#: was called; flexpipe then publishes to its broker.
_host: Celery | None = None


def use_host(celery_app: Celery | None) -> None:
    """Publish on ``celery_app``'s broker from now on (``None``: flexpipe's own again)."""
    global _host
    _host = celery_app
    _reconfigure()


def host() -> Celery | None:
    """The host's Celery app given to :func:`flexpipe.tasks.register`, if any."""
    return _host


def configure(celery_app: Celery, settings: Settings) -> Celery:
    """Apply settings to an app now; calling it again drops the app's cached pools."""
    # Only drop references: kombu shares pools per broker URL process-wide.
    celery_app._pool = None
    amqp = celery_app.__dict__.get("amqp")
    if amqp is not None:
        amqp._producer_pool = None
        # Queue declarations are cached from the first publish; another broker (RabbitMQ's
        # quorum queues, or back) needs them built again from the new configuration.
        for cached in ("queues", "default_queue", "default_exchange", "router"):
            amqp.__dict__.pop(cached, None)
        amqp._rtable = None
    celery_app.conf.update(celery_config(settings))
    return celery_app


#: Not made the current app: a Django or Flask app that imports flexpipe keeps its own
#: app for ``@shared_task`` (the worker makes this one current when it starts). Its
#: configuration is read from the settings when first needed, not at import.
app = Celery("flexpipe", set_as_current=False)
app.add_defaults(lambda: celery_config(get_settings()))
app.steps["worker"].add(BeatWatch)


@on_configure
def _reconfigure() -> None:
    if app.configured:
        configure(app, get_settings())


@signals.worker_init.connect
@signals.beat_init.connect
def _patch_transport(sender: Any = None, **_: Any) -> None:
    # A Redis restart must not kill the worker or beat: see config/kombu_redis.py.
    settings = get_settings()
    if not settings.embedded_broker:
        kombu_redis.install()
    # A worker that stops on an error exits, whatever its pool does: config/worker_exit.py.
    worker_exit.install(settings.worker_exit_grace)
    # A broker that evicts loses messages silently: config/redis_memory.py.
    celery_app = getattr(sender, "app", None) or app
    url = str(celery_app.conf.broker_url or "")
    try:
        redis_memory.check_policy(url, allow_eviction=settings.redis_allow_eviction)
    except ConfigurationError as exc:
        # Celery logs and swallows an Exception raised by a signal handler.
        raise SystemExit(f"flexpipe: {exc}") from None
    redis_memory.warn_if_full(url, settings.redis_memory_warn)


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def _redact_secrets(logger: Any = None, **_: Any) -> None:
    from flexpipe.config import logs

    logs.install(get_settings().secrets, logger)
