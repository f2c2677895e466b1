"""The newsroom's Celery app, which also runs flexpipe: ``celery -A config.celery_app worker
-Q celery,flexpipe,flexpipe.poll -B``.

flexpipe's tasks are registered on it (``flexpipe.tasks.register``), so one worker of the
newsroom runs them and the callbacks alike, on the newsroom's broker
(``CELERY_BROKER_URL``). Starting a worker checks what flexpipe relies on (the broker,
late acks, the visibility timeout) and stops with one line if something is off.
"""

from __future__ import annotations

import os

from celery import Celery

import flexpipe.tasks

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("newsroom")
app.config_from_object("django.conf:settings", namespace="CELERY")
flexpipe.tasks.register(app)
app.autodiscover_tasks()
