"""A Flask app factory wired to Celery as Flask's guide does (``celery_init_app``), with
flexpipe as an extension and its tasks on the app's Celery: ``celery -A
tests.integration.flask_host worker``. The callback reads ``current_app``."""

from __future__ import annotations

import os

from celery import Celery, shared_task
from flask import Flask, current_app

import flexpipe.tasks
from flexpipe.contrib.flask import FlexPipe
from flexpipe.tasks.runtime import runtime
from tests.integration import callbacks

ext = FlexPipe()


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(
        CELERY={
            "broker_url": os.environ.get("HOST_BROKER_URL", "redis://127.0.0.1:6379/0"),
            "task_default_queue": os.environ.get("HOST_QUEUE", "celery"),
            "task_ignore_result": True,
            "broker_connection_retry_on_startup": True,
        },
        GREETING="from the app context",
    )
    app.config.from_prefixed_env("FLASKHOST")
    ext.init_app(app)
    celery_init_app(app)
    return app


def celery_init_app(app: Flask) -> Celery:
    celery_app = Celery(app.name, task_cls=ext.task_class(app))
    celery_app.config_from_object(app.config["CELERY"])
    celery_app.set_default()
    flexpipe.tasks.register(celery_app)
    app.extensions["celery"] = celery_app
    return celery_app


@shared_task(name="tests.integration.flask_host.summary_ready")
def summary_ready(job_id: str) -> None:
    """Needs the app context: ``current_app`` outside one raises."""
    note = current_app.config["GREETING"]
    with runtime().store.engine.begin() as conn:
        conn.execute(callbacks.calls.insert().values(job_id=job_id, task_id="flask", note=note))


flask_app = create_app()
celery_app = flask_app.extensions["celery"]
