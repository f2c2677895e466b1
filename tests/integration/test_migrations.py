"""The Alembic migrations build exactly the tables the code uses, on SQLite and PostgreSQL,
and come back down cleanly."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from flexpipe.migrations import downgrade, upgrade
from flexpipe.schema import metadata

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'migrations.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def test_head_matches_the_schema_the_code_uses(database_url: str) -> None:
    upgrade(database_url)
    upgrade(database_url)  # idempotent
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
            assert diff == []
            assert conn.execute(sa.text("select version_num from alembic_version")).scalar()
        downgrade(database_url, "base")
        assert set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()
