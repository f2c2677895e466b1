"""A host's own Celery app, as an app that already runs Celery has one: its broker is
``HOST_BROKER_URL``, flexpipe's tasks are registered on it, and its callback records each
delivery (``tests.integration.callbacks``). Run as ``celery -A tests.integration.host_app``."""

from __future__ import annotations

import os

from celery import Celery

import flexpipe.tasks
from flexpipe.tasks.runtime import runtime
from tests.integration import callbacks

app = Celery("host", set_as_current=False)
app.conf.update(
    broker_url=os.environ.get("HOST_BROKER_URL", "redis://127.0.0.1:6379/0"),
    task_default_queue=os.environ.get("HOST_QUEUE", "celery"),
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
)
flexpipe.tasks.register(app)


@app.task(name="tests.integration.host_app.summary_ready", bind=True)
def summary_ready(self: object, job_id: str) -> None:
    """The host's callback: records that it ran, in the host's worker."""
    with runtime().store.engine.begin() as conn:
        conn.execute(
            callbacks.calls.insert().values(
                job_id=job_id,
                task_id=self.request.id,
                note="host",  # type: ignore[attr-defined]
            )
        )
