"""No database call can block a worker for ever: on the real PostgreSQL, the runtime's
connections carry the statement timeout from the settings (issue 11)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from flexpipe.errors import DatabaseUnavailable
from flexpipe.tasks.runtime import Runtime


@pytest.fixture
def pg_runtime(postgres_url: str, tmp_path) -> Iterator[Runtime]:
    from flexpipe.config.settings import configure
    from flexpipe.migrations import upgrade
    from flexpipe.tasks.runtime import reset, runtime

    upgrade(postgres_url)  # a server database is migrated by `flexpipe db upgrade`
    configure(
        database_url=postgres_url, data_dir=tmp_path, db_statement_timeout=0.25,
        db_connect_timeout=3,
    )
    yield runtime()
    reset()
    configure()


def test_a_statement_past_the_timeout_is_cancelled(pg_runtime: Runtime) -> None:
    engine = pg_runtime.store.engine
    with engine.connect() as conn:
        assert conn.execute(sa.text("SHOW statement_timeout")).scalar() == "250ms"
        with pytest.raises(DatabaseUnavailable, match="statement timeout"):
            conn.execute(sa.text("SELECT pg_sleep(30)"))
