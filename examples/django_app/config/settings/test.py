"""Test settings (pytest-django: ``DJANGO_SETTINGS_MODULE=config.settings.test``)."""

from config.settings.base import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
