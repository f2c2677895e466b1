"""Alembic environment: runs migrations online against ``sqlalchemy.url``.

flexpipe's revisions live in their own version table (``flexpipe_alembic_version``), and
its tables in the PostgreSQL schema given as the ``schema`` attribute, if any (first on
the migration connection's ``search_path``), so a host's Alembic never sees them.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import context
from sqlalchemy import create_engine, pool

from flexpipe.migrations import VERSION_TABLE, adopt_legacy_version
from flexpipe.schema import metadata

config = context.config


def _migrate(connection: sa.Connection) -> None:
    schema: str | None = config.attributes.get("schema")
    if schema:
        connection.execute(sa.schema.CreateSchema(schema, if_not_exists=True))
        # search_path, not schema_translate_map: Alembic renders its own ALTER statements
        # (add_column and the like) with the names as written, which the map never sees.
        quoted = connection.dialect.identifier_preparer.quote_schema(schema)
        connection.exec_driver_sql(f"SET search_path TO {quoted}")
        connection.commit()
    adopt_legacy_version(connection, schema)
    connection.commit()
    options: dict[str, Any] = {
        "connection": connection,
        "target_metadata": metadata,
        "version_table": VERSION_TABLE,
        "version_table_schema": schema,
        "render_as_batch": connection.dialect.name == "sqlite",
    }
    context.configure(**options)
    with context.begin_transaction():
        context.run_migrations()


def run() -> None:
    connectable = config.attributes.get("connection")
    if connectable is not None:
        _migrate(connectable)
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "", poolclass=pool.NullPool)
    with engine.connect() as connection:
        _migrate(connection)
        connection.commit()
    engine.dispose()


run()
