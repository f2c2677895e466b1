"""flexpipe: durable background LLM work on flex (async) inference, from Celery.

    import flexpipe

    job_id = flexpipe.enqueue("Summarise this ...", instructions="One paragraph.",
                              callback="myapp.tasks.summary_ready")
    view = flexpipe.wait(job_id)          # or flexpipe.get(job_id) from the callback

Importing this package does nothing else: no settings are read, no Celery app is built,
no SDK is imported. Each name below is loaded on first use; settings come from
``FLEXPIPE_*`` variables, from Django or Flask config, or from :func:`configure`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flexpipe.config.settings import Settings, configure
    from flexpipe.errors import (
        ConfigurationError,
        FlexpipeError,
        JobNotFound,
        ValidationError,
    )
    from flexpipe.models import Bulk, JobView
    from flexpipe.states import JobStatus
    from flexpipe.tasks.api import (
        cancel,
        enqueue,
        enqueue_many,
        get,
        get_bulk,
        retry,
        retry_all,
        wait,
    )
    from flexpipe.tasks.bulk import classify, results, summarize

#: Where each public name lives (imported when first asked for).
_EXPORTS = {
    "enqueue": "flexpipe.tasks.api",
    "enqueue_many": "flexpipe.tasks.api",
    "get": "flexpipe.tasks.api",
    "wait": "flexpipe.tasks.api",
    "cancel": "flexpipe.tasks.api",
    "retry": "flexpipe.tasks.api",
    "retry_all": "flexpipe.tasks.api",
    "get_bulk": "flexpipe.tasks.api",
    "classify": "flexpipe.tasks.bulk",
    "summarize": "flexpipe.tasks.bulk",
    "results": "flexpipe.tasks.bulk",
    "JobView": "flexpipe.models",
    "Bulk": "flexpipe.models",
    "JobStatus": "flexpipe.states",
    "FlexpipeError": "flexpipe.errors",
    "ValidationError": "flexpipe.errors",
    "ConfigurationError": "flexpipe.errors",
    "JobNotFound": "flexpipe.errors",
    "Settings": "flexpipe.config.settings",
    "configure": "flexpipe.config.settings",
}

__all__ = [
    "Bulk",
    "ConfigurationError",
    "FlexpipeError",
    "JobNotFound",
    "JobStatus",
    "JobView",
    "Settings",
    "ValidationError",
    "cancel",
    "classify",
    "configure",
    "enqueue",
    "enqueue_many",
    "get",
    "get_bulk",
    "results",
    "retry",
    "retry_all",
    "summarize",
    "wait",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'flexpipe' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
