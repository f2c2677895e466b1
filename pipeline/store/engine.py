"""The database connection: engine creation, the clock, and retrying writes while the
database is away."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from flexpipe.schema import metadata
from flexpipe.store.statements import upsert_result

log = logging.getLogger("flexpipe.store")

P = ParamSpec("P")
R = TypeVar("R")
#: Errors that mean "the database is away or busy" (connection killed, server restarting,
#: SQLite locked), as opposed to a bug in the statement.
TRANSIENT_DB_ERRORS = (sa.exc.OperationalError, sa.exc.InterfaceError)


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


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine; SQLite gets WAL and a busy timeout so several processes can share it."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30}, **kwargs)

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

    def create_tables(self) -> None:
        """Create the tables directly (tests); production uses ``flexpipe db upgrade``."""
        metadata.create_all(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()
