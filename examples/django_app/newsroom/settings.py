"""Django settings of the newsroom example, from ``NEWSROOM_*`` environment variables.

flexpipe reads its own ``FLEXPIPE_*`` variables (broker, database, provider); the Celery
app in ``newsroom.celery`` takes the broker and the callback queue from them.
"""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("NEWSROOM_SECRET_KEY", "dev-only-not-a-secret")
DEBUG = os.environ.get("NEWSROOM_DEBUG", "") == "1"
ALLOWED_HOSTS = os.environ.get("NEWSROOM_ALLOWED_HOSTS", "localhost,127.0.0.1").split(",")

INSTALLED_APPS = ["articles"]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "newsroom.urls"
WSGI_APPLICATION = "newsroom.wsgi.application"

# SQLite shared by the web process and the Celery worker (WAL: readers never wait for the
# writer). Any Django database works; use PostgreSQL in production.
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("NEWSROOM_DB_PATH", str(BASE_DIR / "newsroom.sqlite3")),
        "OPTIONS": {
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL;",
            "transaction_mode": "IMMEDIATE",
        },
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

USE_TZ = True
TIME_ZONE = "UTC"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"articles": {"handlers": ["console"], "level": "INFO"}},
}
