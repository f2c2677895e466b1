"""The Flask example's app factory: ``flask --app examples.flask_app.app run``.

flexpipe itself is configured by its ``FLEXPIPE_*`` environment variables; this app's own
settings come from defaults, then ``FLASK_*`` variables, then the ``config`` argument.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask

from examples.flask_app import completions, summaries

INSTANCE = Path(__file__).resolve().parent / "instance"


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app. Config keys: ``DATABASE_URL`` (this app's completions table; default
    SQLite in ``instance/``), ``SUMMARY_INSTRUCTIONS``, and ``SUMMARY_CALLBACK`` (a task
    name, or ``None`` for no callback)."""
    app = Flask(__name__, instance_path=str(INSTANCE))
    app.config.from_mapping(
        SUMMARY_INSTRUCTIONS="Summarise in two sentences.",
        SUMMARY_CALLBACK=completions.summary_ready.name,
    )
    app.config.from_prefixed_env()  # e.g. FLASK_DATABASE_URL
    app.config.update(config or {})
    if "DATABASE_URL" not in app.config:
        Path(app.instance_path).mkdir(parents=True, exist_ok=True)
        app.config["DATABASE_URL"] = f"sqlite:///{Path(app.instance_path) / 'summaries.db'}"
    completions.create_table(app.config["DATABASE_URL"])
    app.register_blueprint(summaries.bp)
    return app
