"""Errors raised by flexpipe.

Every error flexpipe raises derives from :class:`FlexpipeError`; provider errors are
split into the ones worth retrying and the ones that are not, so a task decides what to
do from the class alone::

    FlexpipeError
    ├── ValidationError              bad request at enqueue time (names the field)
    │   └── IdempotencyConflict      an idempotency key reused for another request
    ├── ConfigurationError           bad settings at start-up
    │   └── SchemaOutOfDate          flexpipe's tables are missing, old, or cannot migrate
    ├── JobNotFound                  no job with that id
    │   └── AmbiguousId              an id prefix that more than one job (or bulk) has
    ├── DatabaseError                the database refused or could not run a statement
    │   ├── DatabaseUnavailable      try again later: away, read-only, full, busy, locked
    │   └── DatabaseRejected         trying again cannot help: the statement is wrong
    │       └── ConstraintViolated   a unique, foreign key, not-null or check constraint
    ├── InvalidWebhook               a webhook whose signature or timestamp does not verify
    └── ProviderError                the provider refused, failed or could not be reached
        ├── RetryableProviderError   try again later (carries ``retry_after``)
        │   ├── RateLimited          429
        │   ├── ProviderUnavailable  5xx, 408, 409
        │   ├── ProviderUnreachable  connection refused, dropped, timed out
        │   └── ResponseNotFound     404 on a read (read lag, or the provider forgot it)
        └── PermanentProviderError   trying again cannot help
            ├── RequestRejected      400, 404 on create, 422 and other 4xx
            ├── AuthenticationFailed 401, 403
            └── ResponseGone         410: a read-once result was already read

All of them pickle, so they can cross task and process boundaries.
"""

from __future__ import annotations

from typing import Any


class FlexpipeError(Exception):
    """Raised for any flexpipe failure; the root of the tree."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (self.message,))


class ValidationError(FlexpipeError):
    """Raised when a request is invalid; ``field`` names the offending argument."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (self.field, self.reason))


class IdempotencyConflict(ValidationError):
    """Raised when an idempotency key already belongs to a job with a different request."""


class ConfigurationError(FlexpipeError):
    """Raised when settings are inconsistent or unusable."""


class SchemaOutOfDate(ConfigurationError):
    """Raised when flexpipe's tables are missing or behind and cannot be brought up to date."""


class JobNotFound(FlexpipeError):
    """Raised when no job has the given id."""


class DatabaseError(FlexpipeError):
    """Raised when the database refused or could not run a statement.

    ``sqlstate`` is PostgreSQL's five-character SQLSTATE when the driver gave one (None
    for SQLite and for connections that failed before the server answered).
    """

    def __init__(self, message: str, *, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_database_error, (self.__class__, self.message, self.sqlstate))


def _rebuild_database_error(
    cls: type[DatabaseError], message: str, sqlstate: str | None
) -> DatabaseError:
    return cls(message, sqlstate=sqlstate)


class DatabaseUnavailable(DatabaseError):
    """Raised when the database is away, read-only, full, busy or locked: retry later."""


class DatabaseRejected(DatabaseError):
    """Raised when the database rejects the statement itself (data or schema errors)."""


class ConstraintViolated(DatabaseRejected):
    """Raised when a write breaks a constraint (unique, foreign key, not null, check)."""


class InvalidWebhook(FlexpipeError):
    """Raised when a webhook's signature, timestamp or body does not verify."""


class AmbiguousId(JobNotFound):
    """Raised when a shortened id matches more than one job or bulk job; type more of it."""


class ProviderError(FlexpipeError):
    """Raised when the inference provider fails, refuses or cannot be reached."""

    #: Short machine-readable code stored with a failed job.
    code = "provider_error"

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        retry_after: float | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retry_after = retry_after
        if code is not None:
            self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_provider_error, (self.__class__, self.message, self.__dict__))


def _rebuild_provider_error(
    cls: type[ProviderError], message: str, state: dict[str, Any]
) -> ProviderError:
    err = cls(message)
    err.__dict__.update(state)
    return err


class RetryableProviderError(ProviderError):
    """Raised when the provider may succeed if asked again later."""

    code = "provider_unavailable"


class RateLimited(RetryableProviderError):
    """Raised on HTTP 429: capacity or rate limits; honour ``retry_after``."""

    code = "rate_limited"


class ProviderUnavailable(RetryableProviderError):
    """Raised on HTTP 5xx, 408 and 409."""

    code = "provider_unavailable"


class ProviderUnreachable(RetryableProviderError):
    """Raised when the connection fails, drops or times out."""

    code = "connection_error"


class ResponseNotFound(RetryableProviderError):
    """Raised on HTTP 404 for a response id (read lag, or the provider forgot it)."""

    code = "response_not_found"


class PermanentProviderError(ProviderError):
    """Raised when asking again cannot help; the job fails with this reason."""

    code = "provider_rejected"


class RequestRejected(PermanentProviderError):
    """Raised on HTTP 400, 422 and other client errors: the request itself is wrong."""

    code = "invalid_request"


class AuthenticationFailed(PermanentProviderError):
    """Raised on HTTP 401 and 403: the API key is missing, wrong or not allowed."""

    code = "authentication_failed"


class ResponseGone(PermanentProviderError):
    """Raised on HTTP 410: a read-once (zero data retention) result was already read."""

    code = "response_gone"
