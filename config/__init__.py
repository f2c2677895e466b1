"""flexpipe configuration: the settings object and the Celery app (``config.celery``)."""
