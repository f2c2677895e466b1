"""Logging guard: the API key (and every other secret setting: the Flower password, the
webhook secret) never reaches a log line, whatever logs it.

:class:`RedactSecrets` is attached to every handler of the root logger when a worker,
beat or the CLI sets up logging, and replaces the configured secrets, any
``Authorization: Bearer ...`` value and the password of any URL (``user:password@`` in a
broker, database or API URL becomes ``user:***@``) with ``***``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._\-]{8,}")
#: ``scheme://user:password@``: the password is whatever lies between the first ``:`` of
#: the authority and its ``@`` (RFC 3986 userinfo; ``/``, ``@`` and spaces end it).
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^\s:/@]*):[^\s/@]+@")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without bearer tokens, URL passwords and the given secrets."""
    text = _URL_PASSWORD.sub(r"\1:***@", _BEARER.sub(r"\1***", text))
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


class RedactSecrets(logging.Filter):
    """Rewrites a record's message when it contains a secret (never drops the record)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 6]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact(message, self.secrets)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_text:
            record.exc_text = self._clean(record.exc_text)
        return True

    def _clean(self, text: str) -> str:
        return redact(text, self.secrets)


def install(secrets: Iterable[str], logger: logging.Logger | None = None) -> None:
    """Attach the filter to every handler of ``logger`` (default: the root logger)."""
    target = logger or logging.getLogger()
    guard = RedactSecrets(secrets)
    for handler in target.handlers:
        if not any(isinstance(f, RedactSecrets) for f in handler.filters):
            handler.addFilter(guard)
