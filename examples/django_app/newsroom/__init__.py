"""The newsroom: a small Django project that offloads summaries and labels to flexpipe."""

from newsroom.celery import app as celery_app

__all__ = ["celery_app"]
