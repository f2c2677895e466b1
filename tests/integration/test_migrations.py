"""The Alembic migrations build exactly the tables the code uses, on SQLite and PostgreSQL,
and come back down cleanly; they share a database with a host's own Alembic without
either seeing the other; and the schema is checked (or, on SQLite, brought up to date)
on first use."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from flexpipe.errors import SchemaOutOfDate
from flexpipe.migrations import OUT_OF_DATE, VERSION_TABLE, downgrade, heads, upgrade
from flexpipe.schema import metadata
from flexpipe.store import Store
from tests.integration.host_alembic import HOST_REVISION, host_check, host_upgrade
from tests.integration.stack import ROOT

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'migrations.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def _diff(conn: sa.Connection) -> list[object]:
    context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    return list(compare_metadata(context, metadata))


def _versions(url: str, table: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(table):
                return set()
            return {row[0] for row in conn.execute(sa.text(f"select version_num from {table}"))}
    finally:
        engine.dispose()


def test_head_matches_the_schema_the_code_uses(database_url: str) -> None:
    upgrade(database_url)
    upgrade(database_url)  # idempotent
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            diff = _diff(conn)
            assert diff == []
        assert _versions(database_url, VERSION_TABLE) == set(heads())
        assert "alembic_version" not in sa.inspect(engine).get_table_names()
        downgrade(database_url, "base")
        assert set(sa.inspect(engine).get_table_names()) <= {VERSION_TABLE}
    finally:
        engine.dispose()


@pytest.mark.parametrize("host_first", [True, False], ids=["host-first", "flexpipe-first"])
def test_a_host_alembic_and_flexpipe_share_a_database(
    database_url: str, tmp_path: Path, host_first: bool
) -> None:
    host = tmp_path / "host_migrations"
    steps = [lambda: host_upgrade(host, database_url), lambda: upgrade(database_url)]
    for step in steps if host_first else steps[::-1]:
        step()
    # Both again, both ways: neither sees the other's revision.
    upgrade(database_url)
    host_upgrade(host, database_url)
    host_check(host, database_url)
    assert _versions(database_url, "alembic_version") == {HOST_REVISION}
    assert _versions(database_url, VERSION_TABLE) == set(heads())


def _as_before_own_version_table(url: str, revision: str) -> None:
    """Make the database look like one migrated by an older flexpipe: its revision in
    ``alembic_version``, no version table of its own."""
    upgrade(url, revision)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"drop table {VERSION_TABLE}"))
        conn.execute(sa.text("create table if not exists alembic_version "
                             "(version_num varchar(32) not null primary key)"))
        conn.execute(sa.text("insert into alembic_version values (:rev)"), {"rev": revision})
    engine.dispose()


def test_an_older_deployment_moves_to_its_own_version_table(database_url: str) -> None:
    _as_before_own_version_table(database_url, "0002")
    upgrade(database_url)
    assert _versions(database_url, VERSION_TABLE) == set(heads())
    engine = sa.create_engine(database_url)
    try:
        assert "alembic_version" not in sa.inspect(engine).get_table_names()
        with engine.connect() as conn:
            assert _diff(conn) == []
    finally:
        engine.dispose()


def test_an_older_deployment_beside_a_host_keeps_the_hosts_rows(
    database_url: str, tmp_path: Path
) -> None:
    """The host ran first; flexpipe then wrote its revision beside the host's (as an old
    flexpipe would have, had Alembic let it): only flexpipe's row moves."""
    host = tmp_path / "host_migrations"
    host_upgrade(host, database_url)
    upgrade(database_url, "0003")
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"drop table {VERSION_TABLE}"))
        conn.execute(sa.text("insert into alembic_version values ('0003')"))
    engine.dispose()
    upgrade(database_url)
    assert _versions(database_url, "alembic_version") == {HOST_REVISION}
    assert _versions(database_url, VERSION_TABLE) == set(heads())
    host_check(host, database_url)


def test_db_upgrade_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEXPIPE_")}
    env.update(PYTHONPATH=str(ROOT), FLEXPIPE_API_KEY="sk-test-not-a-real-key",
               FLEXPIPE_DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    done = subprocess.run([sys.executable, "-m", "flexpipe.cli", "db", "upgrade"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot migrate"), done.stderr


def test_a_server_database_without_the_schema_is_one_clear_line(
    postgres_url: str, tmp_path: Path
) -> None:
    store = Store.from_url(postgres_url)
    try:
        with pytest.raises(SchemaOutOfDate, match="run `flexpipe db upgrade`"):
            store.ensure_schema()
    finally:
        store.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEXPIPE_")}
    env.update(PYTHONPATH=str(ROOT), FLEXPIPE_API_KEY="sk-test-not-a-real-key",
               FLEXPIPE_DATABASE_URL=postgres_url)
    for args in (["submit", "hello"], ["list"]):
        done = subprocess.run([sys.executable, "-m", "flexpipe.cli", *args], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip() == f"error: {OUT_OF_DATE}", done.stderr


def test_enqueue_on_a_server_database_without_the_schema(postgres_url: str) -> None:
    from flexpipe import ConfigurationError
    from flexpipe.config.settings import configure
    from flexpipe.tasks import api

    configure(database_url=postgres_url)
    try:
        with pytest.raises(ConfigurationError, match="out of date: run `flexpipe db upgrade`"):
            api.enqueue("hello")
    finally:
        configure()


def test_sqlite_brings_its_schema_up_to_date_once_with_processes_racing(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'race.db'}"
    code = (
        "import sys; from flexpipe.store import Store; "
        "s = Store.from_url(sys.argv[1]); s.ensure_schema(); print(s.status_counts())"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, url], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert out.strip() == "{}"
    assert _versions(url, VERSION_TABLE) == set(heads())


def test_tables_in_a_postgresql_schema_of_their_own(postgres_url: str, tmp_path: Path) -> None:
    from flexpipe.models import build_request
    from flexpipe.store import NewJob

    host_upgrade(tmp_path / "host_migrations", postgres_url)
    upgrade(postgres_url, schema="flexpipe")
    upgrade(postgres_url, schema="flexpipe")
    engine = sa.create_engine(postgres_url)
    try:
        inspector = sa.inspect(engine)
        assert set(inspector.get_table_names()) == {"alembic_version", "host_users"}
        assert set(inspector.get_table_names(schema="flexpipe")) == {
            *metadata.tables, VERSION_TABLE
        }
        indexes = {ix["name"] for ix in inspector.get_indexes("flexpipe_jobs", schema="flexpipe")}
        assert {ix.name for ix in metadata.tables["flexpipe_jobs"].indexes} <= indexes
    finally:
        engine.dispose()
    store = Store.from_url(postgres_url, schema="flexpipe")
    try:
        store.ensure_schema()
        job_id, _ = store.add_job(NewJob(request=build_request("hi", model="m")))
        assert store.require_job(job_id).status.value == "pending"
    finally:
        store.dispose()
    assert _versions(postgres_url, "alembic_version") == {HOST_REVISION}
    # In a schema of their own, flexpipe's tables are invisible to the host's autogenerate
    # even without the include_name filter.
    host_check(tmp_path / "host_migrations", postgres_url, skip_flexpipe=False)
    with pytest.raises(SchemaOutOfDate):
        plain = Store.from_url(postgres_url)  # the default schema has no flexpipe tables
        try:
            plain.ensure_schema()
        finally:
            plain.dispose()


def test_upgrade_moves_a_populated_database_in_place(database_url: str) -> None:
    """0006 → 0007 on rows written before it: the output text, stored twice before, lives
    in the items afterwards (rows without items get one), and comes back on downgrade."""
    from flexpipe.store import Store

    upgrade(database_url, "0006")
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
        downgrade(database_url, "0006")
        with engine.connect() as conn:
            back = dict(conn.execute(sa.text(
                "SELECT job_id, output_text FROM flexpipe_results ORDER BY job_id")).all())
        assert back == {"text_only": "only text", "neither": None}
    finally:
        store.dispose()
        engine.dispose()
