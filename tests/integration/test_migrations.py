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


def test_upgrade_moves_a_populated_database_in_place(database_url: str) -> None:
    """0005 → 0006 on rows written before it: the output text, stored twice before, lives
    in the items afterwards (rows without items get one), and comes back on downgrade."""
    from flexpipe.store import Store

    upgrade(database_url, "0005")
    engine = sa.create_engine(database_url)
    job = {
        "status": "completed", "model": "m", "requested_tier": "flex", "mode": "background",
        "request": '{"model": "m", "input": "hi"}', "attempt": 1, "poll_count": 1,
        "poll_seq": 1, "parked": False, "escalate": False, "created_at": "2026-01-01 00:00:00",
        "finished_at": "2026-01-01 00:05:00", "updated_at": "2026-01-01 00:05:00",
    }
    items = '[{"type": "message", "content": [{"type": "output_text", "text": "from items"}]}]'
    result = {
        "status": "completed", "input_tokens": 1, "cached_tokens": 0, "output_tokens": 1,
        "reasoning_tokens": 0, "total_tokens": 2, "stored_at": "2026-01-01 00:05:00",
    }
    with engine.begin() as conn:
        for job_id in ("both", "text_only", "neither"):
            conn.execute(sa.text(
                "INSERT INTO flexpipe_jobs (id, " + ", ".join(job) + ") VALUES (:id, "
                + ", ".join(f":{k}" for k in job) + ")"), {"id": job_id, **job})
        insert = sa.text(
            "INSERT INTO flexpipe_results (job_id, output_text, output, " + ", ".join(result)
            + ") VALUES (:job_id, :output_text, :output, " + ", ".join(f":{k}" for k in result)
            + ")")
        conn.execute(insert, {"job_id": "both", "output_text": "from items", "output": items,
                              **result})
        conn.execute(insert, {"job_id": "text_only", "output_text": "only text",
                              "output": "null", **result})
        conn.execute(insert, {"job_id": "neither", "output_text": None, "output": None,
                              **result})
    upgrade(database_url)
    store = Store.from_url(database_url)
    try:
        texts = {}
        for job_id in ("both", "text_only", "neither"):
            stored = store.get_result(job_id)
            assert stored is not None
            texts[job_id] = stored.output_text
        assert texts == {"both": "from items", "text_only": "only text", "neither": None}
        with store.engine.begin() as conn:  # a job takes its results and attempts with it
            conn.execute(sa.text("DELETE FROM flexpipe_jobs WHERE id = 'both'"))
            left = conn.execute(sa.text("SELECT count(*) FROM flexpipe_results")).scalar()
        assert left == 2
        downgrade(database_url, "0005")
        with engine.connect() as conn:
            back = dict(conn.execute(sa.text(
                "SELECT job_id, output_text FROM flexpipe_results ORDER BY job_id")).all())
        assert back == {"text_only": "only text", "neither": None}
    finally:
        store.dispose()
        engine.dispose()
