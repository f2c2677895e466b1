"""flexpipe's settings from Django's: the ``FLEXPIPE`` dict, and a database of
``DATABASES`` turned into a SQLAlchemy URL."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured

#: Keys of ``FLEXPIPE`` that are about Django, not flexpipe's own settings.
DJANGO_KEYS = ("DATABASE",)

#: Django database engines flexpipe can share, and the SQLAlchemy driver for each.
DRIVERS = {
    "django.db.backends.postgresql": "postgresql+psycopg",
    "django.contrib.gis.db.backends.postgis": "postgresql+psycopg",
    "django.db.backends.sqlite3": "sqlite",
    "django.contrib.gis.db.backends.spatialite": "sqlite",
}


def options() -> dict[str, Any]:
    """The ``FLEXPIPE`` dict of settings.py (empty when there is none)."""
    given = getattr(django_settings, "FLEXPIPE", {}) or {}
    if not isinstance(given, Mapping):
        raise ImproperlyConfigured("settings.FLEXPIPE must be a dict such as {'MODEL': '...'}")
    return {str(key).upper(): value for key, value in given.items()}


def alias() -> str:
    """The Django database whose tables flexpipe uses (and the admin reads)."""
    return str(options().get("DATABASE", "default"))


def values() -> dict[str, Any]:
    """flexpipe's settings named in ``FLEXPIPE`` (lower-case, as ``configure`` takes them)."""
    return {key.lower(): value for key, value in options().items() if key not in DJANGO_KEYS}


def database_url(settings_dict: Mapping[str, Any]) -> str:
    """A SQLAlchemy URL for one entry of ``DATABASES`` (PostgreSQL or SQLite)."""
    from sqlalchemy.engine import URL

    engine = str(settings_dict.get("ENGINE", ""))
    driver = DRIVERS.get(engine)
    if driver is None:
        raise ImproperlyConfigured(
            f"flexpipe cannot share a database of ENGINE {engine!r} (PostgreSQL and SQLite "
            "can); set FLEXPIPE['DATABASE_URL'] to a database of its own"
        )
    name = str(settings_dict.get("NAME") or "")
    if driver == "sqlite":
        if not name or name == ":memory:" or "mode=memory" in name:
            raise ImproperlyConfigured(
                "flexpipe needs an SQLite file that its worker can open too, not an in-memory "
                "database; set DATABASES NAME (or TEST NAME) to a path"
            )
        return f"sqlite:///{name}"
    query = {
        key: str(value)
        for key, value in (settings_dict.get("OPTIONS") or {}).items()
        if key in ("sslmode", "sslrootcert", "sslcert", "sslkey", "options", "connect_timeout")
    }
    port = settings_dict.get("PORT")
    url = URL.create(
        driver,
        username=settings_dict.get("USER") or None,
        password=settings_dict.get("PASSWORD") or None,
        host=settings_dict.get("HOST") or None,
        port=int(port) if port else None,
        database=name or None,
        query=query,
    )
    return url.render_as_string(hide_password=False)
