"""The database connection: engine creation, the clock, the one mapping of driver errors
to flexpipe's, and retrying writes while the database is away.

Every engine made here translates errors as they leave the driver (SQLAlchemy's
``handle_error`` event): an error that means "the database is away, read-only, full,
busy or locked" becomes :class:`~flexpipe.errors.DatabaseUnavailable` (retryable); a
constraint, data or statement error becomes :class:`~flexpipe.errors.DatabaseRejected`.
The meaning is read from PostgreSQL's SQLSTATE, not from the exception's class: a
read-only transaction, for one, reaches SQLAlchemy as ``InternalError``.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from flexpipe.errors import (
    ConstraintViolated,
    DatabaseError,
    DatabaseRejected,
    DatabaseUnavailable,
)
from flexpipe.schema import metadata
from flexpipe.store.statements import upsert_result

log = logging.getLogger("flexpipe.store")

P = ParamSpec("P")
R = TypeVar("R")
#: Errors that mean "the database is away or busy" (connection killed, server restarting,
#: read-only, full, SQLite locked), as opposed to a bug in the statement. A pool that has
#: no free connection in time raises SQLAlchemy's ``TimeoutError`` before any driver call.
TRANSIENT_DB_ERRORS: tuple[type[Exception], ...] = (DatabaseUnavailable, sa.exc.TimeoutError)

#: SQLSTATEs (or their two-character classes) that mean "try again later".
TRANSIENT_SQLSTATES = {
    "08": "cannot connect or connection lost",
    "25006": "read-only transaction (failover, replica, default_transaction_read_only)",
    "40001": "serialization failure",
    "40P01": "deadlock",
    "53": "insufficient resources (disk full 53100, out of memory 53200, too many "
    "connections 53300)",
    "55P03": "lock not available (lock_timeout)",
    "57014": "statement cancelled (statement_timeout)",
    "57P01": "admin shutdown",
    "57P02": "crash shutdown",
    "57P03": "cannot connect now (starting up, shutting down)",
    "58030": "I/O error",
}
#: SQLite says what is wrong only in the message.
TRANSIENT_SQLITE = ("locked", "busy", "disk is full", "disk i/o error", "unable to open")


def sqlstate_of(exc: BaseException) -> str | None:
    """The SQLSTATE a driver error carries: psycopg 3's ``sqlstate``, psycopg2's ``pgcode``."""
    orig = getattr(exc, "orig", exc)
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return code if isinstance(code, str) else None


def classify(exc: BaseException, *, disconnect: bool = False) -> DatabaseError:
    """The flexpipe error for a driver error (``sqlalchemy.exc.DBAPIError`` or the driver's
    own), by what it means. ``disconnect``: SQLAlchemy saw a lost connection."""
    orig = getattr(exc, "orig", exc)
    message = f"{type(orig).__name__}: {str(orig).strip().splitlines()[0] if str(orig) else ''}"
    state = sqlstate_of(exc)
    if state is not None:
        if state in TRANSIENT_SQLSTATES or state[:2] in TRANSIENT_SQLSTATES:
            return DatabaseUnavailable(message, sqlstate=state)
        if state.startswith("23"):
            return ConstraintViolated(message, sqlstate=state)
        return DatabaseRejected(message, sqlstate=state)
    if isinstance(exc, sa.exc.IntegrityError) or type(orig).__name__ == "IntegrityError":
        return ConstraintViolated(message)
    if disconnect:
        return DatabaseUnavailable(message)
    if type(orig).__module__.startswith("sqlite3"):
        if any(word in str(orig).lower() for word in TRANSIENT_SQLITE):
            return DatabaseUnavailable(message)
        return DatabaseRejected(message)
    # psycopg without a SQLSTATE: the server never answered (refused, reset, closed).
    if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError) or type(
        orig
    ).__name__ in ("OperationalError", "InterfaceError"):
        return DatabaseUnavailable(message)
    return DatabaseRejected(message)


def _translate(context: sa.engine.ExceptionContext) -> BaseException | None:
    if context.is_pre_ping or not isinstance(context.sqlalchemy_exception, sa.exc.DBAPIError):
        return None  # pre-ping must see the driver's error to recycle the connection
    return classify(context.sqlalchemy_exception, disconnect=context.is_disconnect)


def retrying(method: Callable[P, R]) -> Callable[P, R]:
    """Retry a store write while the database is away (up to ``Store.db_retry_s``).

    Used on the writes that record what the provider already did (its response id, a
    result): losing them would mean asking the provider again. Every such write is a
    guarded update, so a retry after a commit whose acknowledgement was lost is harmless.
    """

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        store = args[0]
        assert isinstance(store, Database)
        deadline = time.monotonic() + store.db_retry_s
        delay = 0.05
        while True:
            try:
                return method(*args, **kwargs)
            except TRANSIENT_DB_ERRORS as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning(
                    "database unavailable in %s (%s); retrying in %.2fs",
                    method.__name__,
                    type(exc).__name__,
                    delay,
                )
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    return wrapper


def make_engine(url: str, *, schema: str | None = None, **kwargs: Any) -> Engine:
    """Create an engine that translates driver errors (see the module docstring); SQLite
    gets WAL and a busy timeout so several processes can share it.

    ``schema``: a PostgreSQL schema flexpipe's tables live in (``schema_translate_map``).
    """
    engine = _make_engine(url, **kwargs)
    sa.event.listen(engine, "handle_error", _translate)
    if schema:
        return engine.execution_options(schema_translate_map={None: schema})
    return engine


def _make_engine(url: str, **kwargs: Any) -> Engine:
    if url.startswith("sqlite"):
        connect_args = {"timeout": 30, **kwargs.pop("connect_args", {})}
        engine = sa.create_engine(url, connect_args=connect_args, **kwargs)

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return sa.create_engine(url, **kwargs)


def safe_url(url: str) -> str:
    """A database URL fit to print: the password masked."""
    return sa.engine.make_url(url).render_as_string(hide_password=True)


class Database:
    """The engine, the clock and the retry budget that every part of the store shares."""

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Callable[[], datetime] | None = None,
        db_retry_s: float = 60.0,
    ) -> None:
        self.engine = engine
        #: How long writes that record provider-side effects retry a missing database.
        self.db_retry_s = db_retry_s
        self._clock = clock or (lambda: datetime.now(UTC))
        self._postgres = engine.dialect.name == "postgresql"
        self._upsert_result = upsert_result(engine.dialect.name)

    def now(self) -> datetime:
        return self._clock()

    @property
    def schema(self) -> str | None:
        """The PostgreSQL schema flexpipe's tables live in (None: the default one)."""
        mapping = self.engine.get_execution_options().get("schema_translate_map") or {}
        schema: str | None = mapping.get(None)
        return schema

    def create_tables(self) -> None:
        """Create the tables directly (tests); production uses ``flexpipe db upgrade``."""
        metadata.create_all(self.engine)

    def ensure_schema(self) -> None:
        """Bring the tables up to date on SQLite, or raise
        :class:`~flexpipe.errors.SchemaOutOfDate` on a server where they are not."""
        from flexpipe.migrations import ensure_schema

        ensure_schema(self.engine, self.schema)

    def dispose(self) -> None:
        self.engine.dispose()
