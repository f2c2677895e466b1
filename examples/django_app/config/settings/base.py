"""Django settings of the newsroom, shared by every environment, from ``NEWSROOM_*``
environment variables.

flexpipe is an installed app: its settings are the ``FLEXPIPE`` dict below (any
``FLEXPIPE_*`` variable fills in what it leaves out), its tables live in the newsroom's
own database (``manage.py migrate`` creates them), and its tasks run on the newsroom's
Celery app and broker (``config/celery_app.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[2]

SECRET_KEY = os.environ.get("NEWSROOM_SECRET_KEY", "dev-only-not-a-secret")
DEBUG = os.environ.get("NEWSROOM_DEBUG", "") == "1"
ALLOWED_HOSTS = os.environ.get("NEWSROOM_ALLOWED_HOSTS", "localhost,127.0.0.1").split(",")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "flexpipe.contrib.django",
    "articles",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
STATIC_URL = "static/"

# PostgreSQL, shared by the web process, the Celery worker and flexpipe's tables.
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("NEWSROOM_DB_NAME", "newsroom"),
        "USER": os.environ.get("NEWSROOM_DB_USER", "postgres"),
        "PASSWORD": os.environ.get("NEWSROOM_DB_PASSWORD", ""),
        "HOST": os.environ.get("NEWSROOM_DB_HOST", "127.0.0.1"),
        "PORT": os.environ.get("NEWSROOM_DB_PORT", "5432"),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

USE_TZ = True
TIME_ZONE = "UTC"

# Celery (cookiecutter-django's names); flexpipe publishes on this broker too.
CELERY_BROKER_URL = os.environ.get("NEWSROOM_BROKER_URL", "redis://127.0.0.1:6379/0")
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("NEWSROOM_QUEUE", "celery")
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
# Callbacks are idempotent, so a message is acknowledged only once it has run.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

FLEXPIPE = {
    "DATABASE": "default",  # flexpipe's tables in the newsroom's database
    "CALLBACK_QUEUE": CELERY_TASK_DEFAULT_QUEUE,  # callbacks go to the newsroom's queue
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"articles": {"handlers": ["console"], "level": "INFO"}},
}
