"""Alembic migrations of flexpipe's tables; :func:`upgrade` brings a database up to date.

flexpipe keeps its own Alembic version table, ``flexpipe_alembic_version``, so a host's
Alembic (Flask-Migrate) or Django migrations and flexpipe's never read each other's
revisions. A database migrated before that (flexpipe's revision in ``alembic_version``) is
moved over in place on the next upgrade; a host's rows there are left as they are.

:func:`ensure_schema` is what the runtime calls on first use: on SQLite it upgrades (under
a file lock, so processes starting together migrate once); on a server it only checks,
and a missing or old schema is one :class:`SchemaOutOfDate` line.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import Connection, Engine

from flexpipe.errors import DatabaseError, DatabaseUnavailable, SchemaOutOfDate

log = logging.getLogger("flexpipe.migrations")

HERE = Path(__file__).parent
#: flexpipe's own Alembic version table.
VERSION_TABLE = "flexpipe_alembic_version"
#: The version table flexpipe shared with everyone before it had its own.
LEGACY_VERSION_TABLE = "alembic_version"
OUT_OF_DATE = "flexpipe's tables are missing or out of date: run `flexpipe db upgrade`"


def alembic_config(url: str, schema: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["schema"] = schema
    return config


@functools.cache
def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config("sqlite://"))


def revisions() -> frozenset[str]:
    """Every revision id flexpipe's migrations have."""
    return frozenset(rev.revision for rev in _script().walk_revisions())


def heads() -> frozenset[str]:
    return frozenset(_script().get_heads())


def upgrade(url: str, revision: str = "head", *, schema: str | None = None) -> None:
    """Apply every migration up to ``revision`` (idempotent). Raises
    :class:`SchemaOutOfDate` with one line when the database refuses or is unreachable."""
    with _errors_as_one_line(url):
        command.upgrade(alembic_config(url, schema), revision)


def downgrade(url: str, revision: str, *, schema: str | None = None) -> None:
    with _errors_as_one_line(url):
        command.downgrade(alembic_config(url, schema), revision)


def current(connection: Connection, schema: str | None = None) -> frozenset[str]:
    """The revisions recorded in flexpipe's version table (empty when there is none)."""
    context = MigrationContext.configure(
        connection, opts={"version_table": VERSION_TABLE, "version_table_schema": schema}
    )
    return frozenset(context.get_current_heads())


def is_current(engine: Engine, schema: str | None = None) -> bool:
    """True when flexpipe's tables are at the latest migration."""
    with engine.connect() as conn:
        recorded = current(conn, schema)
        if recorded:
            return recorded == heads()
        # No version recorded: tables made directly (Store.create_tables) count as current;
        # a database migrated before flexpipe had its own version table does not.
        inspector = sa.inspect(conn)
        return inspector.has_table("flexpipe_jobs", schema=schema) and not _legacy_rows(conn)


def ensure_schema(engine: Engine, schema: str | None = None) -> None:
    """Make sure flexpipe's tables are current before first use.

    SQLite (the embedded default) upgrades itself, one process at a time; a server
    database raises :class:`SchemaOutOfDate` instead, since migrating production is a
    deliberate step (``flexpipe db upgrade``).
    """
    try:
        if is_current(engine, schema):
            return
    except (DatabaseUnavailable, sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        # Away, not wrong: the store's writes wait for it as they always did.
        # Info, not a warning: the caller reports the outage itself (the CLI in one line).
        log.info("cannot check flexpipe's schema now (%s)", _first_line(exc))
        return
    except (sa.exc.SQLAlchemyError, DatabaseError) as exc:  # the store's engine translates
        raise SchemaOutOfDate(f"{OUT_OF_DATE} ({_first_line(exc)})") from None
    if engine.dialect.name != "sqlite" or not engine.url.database:
        raise SchemaOutOfDate(OUT_OF_DATE)
    with _file_lock(Path(engine.url.database + ".migrate.lock")):
        if not is_current(engine, schema):  # another process may have done it meanwhile
            upgrade(engine.url.render_as_string(hide_password=False), schema=schema)


def adopt_legacy_version(connection: Connection, schema: str | None = None) -> None:
    """Move flexpipe's revision out of ``alembic_version`` into its own version table.

    Only flexpipe's known revision ids move, and only where flexpipe's tables exist, so a
    host's Alembic history in ``alembic_version`` stays untouched. ``alembic_version`` is
    dropped if flexpipe was its only user.
    """
    ours = _legacy_rows(connection, schema)
    if not ours:
        return
    if current(connection, schema):
        raise SchemaOutOfDate(
            f"both {LEGACY_VERSION_TABLE} and {VERSION_TABLE} record flexpipe revisions; "
            f"delete flexpipe's rows ({', '.join(sorted(ours))}) from {LEGACY_VERSION_TABLE}"
        )
    legacy = _version_table(LEGACY_VERSION_TABLE, schema)
    mine = _version_table(VERSION_TABLE, schema)
    mine.create(connection, checkfirst=True)
    connection.execute(mine.insert(), [{"version_num": rev} for rev in sorted(ours)])
    connection.execute(legacy.delete().where(legacy.c.version_num.in_(sorted(ours))))
    if connection.execute(sa.select(sa.func.count()).select_from(legacy)).scalar() == 0:
        legacy.drop(connection)


def _legacy_rows(connection: Connection, schema: str | None = None) -> set[str]:
    inspector = sa.inspect(connection)
    if not inspector.has_table(LEGACY_VERSION_TABLE, schema=schema):
        return set()
    if not inspector.has_table("flexpipe_jobs", schema=schema):
        return set()
    legacy = _version_table(LEGACY_VERSION_TABLE, schema)
    rows = {row[0] for row in connection.execute(sa.select(legacy.c.version_num))}
    return rows & revisions()


def _version_table(name: str, schema: str | None) -> sa.Table:
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("version_num", sa.String(32), primary_key=True),
        schema=schema,
    )


@contextlib.contextmanager
def _errors_as_one_line(url: str) -> Iterator[None]:
    try:
        yield
    except CommandError as exc:
        raise SchemaOutOfDate(f"cannot migrate flexpipe's tables: {_first_line(exc)}") from None
    except sa.exc.SQLAlchemyError as exc:
        safe = sa.engine.make_url(url).render_as_string(hide_password=True)
        raise SchemaOutOfDate(
            f"cannot migrate flexpipe's tables at {safe}: {_first_line(exc)}"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
