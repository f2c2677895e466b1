"""Tasks that other apps send by name, without importing flexpipe.

Kept apart from :mod:`flexpipe.tasks.steps`: the enqueue API publishes those steps, and
this task calls the enqueue API, so in one module they would import each other.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task

from flexpipe.config.celery import app
from flexpipe.errors import ValidationError
from flexpipe.models import check_fields
from flexpipe.tasks.api import enqueue as enqueue_job
from flexpipe.tasks.steps import ACKS

log = logging.getLogger("flexpipe.tasks")


# ``throws``: a rejected request is an expected outcome, logged once here (without the
# prompt) and shown in Flower as the task's failure, not logged again with a traceback.
# Not retried on a soft time limit: without an idempotency key a second run is a second job.
@app.task(name="flexpipe.enqueue", bind=True, throws=(ValidationError,), **ACKS)
def enqueue(self: Task, *args: Any, **request: Any) -> str:
    """Enqueue a job for apps that don't import flexpipe: ``send_task("flexpipe.enqueue")``.

    The request gets every check :func:`flexpipe.enqueue` makes; a rejected one is logged
    at ERROR (the field and the reason, never the prompt) and the task fails with its
    :class:`ValidationError`.
    """
    try:
        if args:
            raise ValidationError("args", "send the request as keyword arguments (kwargs=...)")
        check_fields(request)
        return enqueue_job(**request)
    except ValidationError as exc:
        log.error("flexpipe.enqueue %s rejected a request: %s", self.request.id, exc)
        raise
