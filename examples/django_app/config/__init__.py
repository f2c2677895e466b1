"""The newsroom's project package (cookiecutter-django layout): settings, URLs, WSGI and
the Celery app, which is loaded with Django so that ``@shared_task`` uses it."""

from config.celery_app import app as celery_app

__all__ = ["celery_app"]
