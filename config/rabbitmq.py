"""A fix to Celery's native delayed delivery on RabbitMQ: countdowns under one second.

Celery turns a countdown into RabbitMQ's delay levels with ``int(countdown)``, and kombu
refuses the resulting 0 (``ValueError: countdown must be a positive number``), so every
``apply_async(countdown=0.3)`` fails to publish. flexpipe's poll waits and retry backoffs
are often under a second (and always in tests, with time scaled down). Here such a message
waits one second in RabbitMQ instead; the ETA it carries is then already past, so the
worker runs it on arrival.
"""

from __future__ import annotations

from typing import Any

_MARK = "_flexpipe_subsecond"


def install() -> None:
    """Wrap the routing-key function Celery's ``send_task`` calls (idempotent)."""
    import celery.app.base as base

    original = getattr(base, "calculate_routing_key", None)
    if original is None or getattr(original, _MARK, False):
        return

    def calculate_routing_key(countdown: int, routing_key: str, *args: Any, **kwargs: Any) -> Any:
        return original(max(int(countdown), 1), routing_key, *args, **kwargs)

    setattr(calculate_routing_key, _MARK, True)
    base.calculate_routing_key = calculate_routing_key
