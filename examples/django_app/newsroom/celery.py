"""The newsroom's own Celery app: it runs the callbacks flexpipe sends.

It uses flexpipe's broker and listens on flexpipe's callback queue, both read from
flexpipe's settings (``FLEXPIPE_BROKER_URL``, ``FLEXPIPE_CALLBACK_QUEUE``), so the two
cannot drift apart. Run it with ``celery -A newsroom worker``.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "newsroom.settings")


def flexpipe_broker() -> dict[str, Any]:
    """Broker and queue settings shared with flexpipe (read when the app is configured)."""
    from flexpipe.config.celery import broker_options
    from flexpipe.config.settings import get_settings

    settings = get_settings()
    return {
        "broker_url": settings.broker_url,
        # flexpipe's embedded broker needs its own transport class (atomic writes).
        "broker_transport": (
            "flexpipe.config.broker:Transport" if settings.embedded_broker else None
        ),
        "broker_transport_options": broker_options(settings),
        "broker_connection_retry_on_startup": True,
        "task_default_queue": settings.callback_queue,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        # Callbacks are idempotent, so a message is acknowledged only once it has run.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
    }


app = Celery("newsroom")
app.add_defaults(flexpipe_broker)
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
