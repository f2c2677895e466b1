"""The Django app: ``ready()`` hands flexpipe its settings, ``migrate`` upgrades its tables."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.core.exceptions import ImproperlyConfigured
from django.db.models.signals import post_migrate


class FlexpipeConfig(AppConfig):
    name = "flexpipe.contrib.django"
    label = "flexpipe"
    verbose_name = "flexpipe"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        configure_flexpipe()
        post_migrate.connect(upgrade_tables, sender=self)


def configure_flexpipe(database_url: str | None = None) -> None:
    """Give flexpipe its settings: ``FLEXPIPE`` first, then ``FLEXPIPE_*`` variables, then
    the database of ``FLEXPIPE["DATABASE"]`` (``database_url``, when given, instead).

    Raises ``ImproperlyConfigured`` when flexpipe would publish on a broker that the
    project's Celery does not read (``CELERY_BROKER_URL``): its callbacks would be lost.
    """
    from django.db import connections

    from flexpipe.config import celery as flexpipe_celery
    from flexpipe.config.settings import configure, load_settings
    from flexpipe.contrib.django import settings
    from flexpipe.errors import ConfigurationError

    values = settings.values()
    try:
        from_env = load_settings().model_fields_set
        if "database_url" not in values and "database_url" not in from_env:
            values["database_url"] = database_url or settings.database_url(
                connections[settings.alias()].settings_dict
            )
        configured = configure(**values)
    except ConfigurationError as exc:
        raise ImproperlyConfigured(f"flexpipe: {exc}") from None
    host_broker = getattr(django_settings(), "CELERY_BROKER_URL", None)
    if host_broker and flexpipe_celery.host() is None:
        ours = configured.broker_url
        if ours.rstrip("/") != str(host_broker).rstrip("/"):
            raise ImproperlyConfigured(
                f"flexpipe publishes to {safe(ours)} but CELERY_BROKER_URL is "
                f"{safe(str(host_broker))}: callbacks would wait for a worker that never "
                "comes. Call flexpipe.tasks.register(app) on your Celery app (flexpipe then "
                "uses its broker) or set FLEXPIPE['BROKER_URL'] to the same broker"
            )


def upgrade_tables(using: str = "default", **_: Any) -> None:
    """``manage.py migrate`` of flexpipe's database: run flexpipe's Alembic migrations.

    Test runners migrate a test database; flexpipe is pointed at it then."""
    from django.db import connections

    from flexpipe.config.settings import get_settings
    from flexpipe.contrib.django import settings
    from flexpipe.migrations import upgrade

    if "DATABASE_URL" in settings.options():
        if using == "default":
            upgrade(get_settings().db_url)
        return
    if using != settings.alias():
        return
    url = settings.database_url(connections[using].settings_dict)
    if url != get_settings().db_url:
        configure_flexpipe(database_url=url)
    upgrade(url)


def django_settings() -> Any:
    from django.conf import settings

    return settings


def safe(url: str) -> str:
    from kombu.utils.url import maybe_sanitize_url

    return str(maybe_sanitize_url(url))
