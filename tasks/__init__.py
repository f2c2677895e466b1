"""flexpipe's Celery tasks and the Python API that apps call.

    from tasks import enqueue, get, wait, cancel

    job_id = enqueue("Summarise this ...", instructions="One paragraph.",
                     callback="myapp.tasks.summary_ready")

The API is imported on first use, so ``import tasks.cli`` reads no settings.
"""

from __future__ import annotations

from typing import Any

__all__ = ["cancel", "enqueue", "enqueue_many", "get", "get_bulk", "wait"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from tasks import api

        return getattr(api, name)
    raise AttributeError(f"module 'tasks' has no attribute {name!r}")
