"""flexpipe configuration: the settings object and the Celery app (``flexpipe.config.celery``)."""
