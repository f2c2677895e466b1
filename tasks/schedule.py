"""The scheduled bulk job: beat sends ``flexpipe.classify_job`` every
``FLEXPIPE_CLASSIFY_SCHEDULE`` seconds, and the task calls the application's function named
by ``FLEXPIPE_CLASSIFY_JOB``.

That function picks the rows that need a label, enqueues them as one bulk job
(:func:`flexpipe.tasks.bulk.classify`) with an ``on_complete`` callback that writes the labels back,
and returns the bulk id (None when there was nothing to do). Beat does not wait for a bulk
to finish before the next run, so the function must mark the rows it sent and skip them
next time. ``examples/scheduled_classification`` is a complete example.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable

from flexpipe.config.celery import app
from flexpipe.errors import ConfigurationError
from flexpipe.tasks.runtime import runtime
from flexpipe.tasks.steps import ACKS

log = logging.getLogger("flexpipe.schedule")


@app.task(name="flexpipe.classify_job", **ACKS)
def classify_job() -> str:
    """Run the configured job function once; return a short word for logs and Flower."""
    bulk_id = load_job(runtime().settings.classify_job)()
    if bulk_id is None:
        return "nothing to classify"
    log.info("scheduled classification: bulk %s", bulk_id)
    return f"bulk {bulk_id}"


def load_job(path: str) -> Callable[[], str | None]:
    """Import the function at a dotted path; :class:`ConfigurationError` if there is none."""
    if not path:
        raise ConfigurationError("FLEXPIPE_CLASSIFY_JOB is not set")
    module_name, _, attr = path.rpartition(".")
    try:
        function = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigurationError(f"FLEXPIPE_CLASSIFY_JOB: cannot import {path!r}: {exc}") from None
    if not callable(function):
        raise ConfigurationError(f"FLEXPIPE_CLASSIFY_JOB: {path!r} is not a function")
    job: Callable[[], str | None] = function
    return job
