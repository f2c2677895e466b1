"""flexpipe in a Flask app: ``FlexPipe(app)`` or ``flexpipe_ext.init_app(app)``.

Configuration comes from ``app.config``: every ``FLEXPIPE_*`` key there is a flexpipe
setting (``FLEXPIPE_DATABASE_URL``, ``FLEXPIPE_BROKER_URL``, ...); environment variables
fill in the rest. The extension is stored in ``app.extensions["flexpipe"]``.

Callbacks run in an app context when the worker is given the app: make the Celery app as
Flask's Celery guide does (``celery_init_app``) with :meth:`FlexPipe.task_class` as its
``task_cls``, and call :func:`flexpipe.tasks.register` on it; one worker of that app then
runs flexpipe's tasks and your callbacks, each inside ``app.app_context()``.

The webhook receiver is a blueprint: ``app.register_blueprint(webhook_blueprint(),
url_prefix="/flexpipe/webhooks")``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celery import Task
    from flask import Blueprint, Flask

PREFIX = "FLEXPIPE_"


class FlexPipe:
    """The Flask extension (Flask Extension Development style)."""

    def __init__(self, app: Flask | None = None) -> None:
        self.app: Flask | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Hand flexpipe the ``FLEXPIPE_*`` keys of ``app.config`` (values win over the
        environment) and record the extension in ``app.extensions["flexpipe"]``."""
        from flexpipe.config.settings import configure

        configure(**settings_of(app.config))
        app.extensions["flexpipe"] = self
        self.app = app

    def task_class(self, app: Flask | None = None) -> type[Task]:
        """A Celery ``Task`` class whose tasks run inside ``app.app_context()``: give it to
        ``Celery(app.name, task_cls=...)`` (the ``FlaskTask`` of Flask's Celery guide)."""
        from celery import Task

        given = app or self.app
        if given is None:
            raise RuntimeError("FlexPipe.task_class() needs an app: call init_app(app) first")
        flask_app: Flask = given

        class FlaskTask(Task):  # type: ignore[misc]
            def __call__(self, *args: Any, **kwargs: Any) -> Any:
                with flask_app.app_context():
                    return self.run(*args, **kwargs)

        return FlaskTask


def settings_of(config: Any) -> dict[str, Any]:
    """flexpipe's settings among a Flask config's keys (``FLEXPIPE_MODEL`` → ``model``)."""
    return {
        key[len(PREFIX) :].lower(): value
        for key, value in dict(config).items()
        if key.startswith(PREFIX)
    }


def webhook_blueprint(name: str = "flexpipe_webhooks") -> Blueprint:
    """A blueprint with the webhook receiver at its root (``POST /``): register it at the
    URL registered with the provider."""
    from flask import Blueprint, request

    blueprint = Blueprint(name, __name__)

    @blueprint.post("/")
    def receive() -> tuple[dict[str, Any], int]:
        from flexpipe.tasks.webhooks import receiver

        headers = {key.lower(): value for key, value in request.headers.items()}
        reply = receiver().handle(request.get_data(cache=False), headers)
        return reply.body, reply.status

    return blueprint


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """For Flask-Migrate / Alembic autogenerate of the host's tables: leave flexpipe's
    tables out (``Migrate(app, db, include_name=include_name)``)."""
    return not (type_ == "table" and (name or "").startswith("flexpipe_"))


__all__ = ["FlexPipe", "include_name", "settings_of", "webhook_blueprint"]
