"""Scheduled bulk classification under a real beat: the worker runs with embedded beat on a
0.5 s schedule (set through FLEXPIPE_* variables, as in production) and the example's job
labels the tickets table (examples/scheduled_classification), on Redis + PostgreSQL and on
the embedded defaults. Everything is checked from SQL and the emulator's counts."""

from __future__ import annotations

import collections
import time
import uuid
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from examples.scheduled_classification import tickets as app_tables
from flexpipe.schema import bulks
from tests.integration.conftest import make_stack
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration

JOB = "examples.scheduled_classification.jobs.classify_new_tickets"
IMPORTS = "tests.integration.callbacks,examples.scheduled_classification.jobs"
FIRST = [
    "I was charged twice for my March invoice.",
    "The export button crashes the app with error 500.",
    "How do I change the email address on my account?",
    "Do you sponsor local football clubs?",
] * 3
LATER = ["Search fails when the query has an apostrophe.", "Please refund my last payment."]


def _tickets_database(request: pytest.FixtureRequest, backend: str, tmp: str) -> str:
    """The app's own database: a PostgreSQL database of its own, or a SQLite file."""
    if backend == "embedded":
        return f"sqlite:///{tmp}/tickets.db"
    admin_url = request.getfixturevalue("postgres_server")
    name = f"tickets_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        app_tables.engine_for(url).dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    request.addfinalizer(drop)
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    return url


@pytest.fixture(scope="module", params=["services", "embedded"])
def scheduled(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, emulator: str
) -> Stack:
    """A stack whose beat runs the example's job every 0.5 s."""
    tmp = tmp_path_factory.mktemp(f"tickets-{request.param}")
    url = _tickets_database(request, request.param, str(tmp))
    app_tables.create_tables(url)  # before beat's first run
    return make_stack(
        request,
        tmp_path_factory,
        request.param,
        emulator,
        extra_env={
            "FLEXPIPE_CLASSIFY_SCHEDULE": "0.5",
            "FLEXPIPE_CLASSIFY_JOB": JOB,
            "FLEXPIPE_IMPORTS": IMPORTS,
            "TICKETS_DATABASE_URL": url,
        },
    )


def wait_for(stack: Stack, what: str, ready: Callable[[], bool], timeout: float = 90.0) -> None:
    end = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < end, f"{what} after {timeout:g}s\n{stack.log_tail()}"
        time.sleep(0.1)


def test_beat_labels_every_ticket_once(scheduled: Stack) -> None:
    scheduled.activate()
    engine = app_tables.engine_for(scheduled.env["TICKETS_DATABASE_URL"])
    tickets, runs = app_tables.tickets, app_tables.runs

    def rows() -> list[sa.Row]:
        with engine.connect() as conn:
            return list(conn.execute(sa.select(tickets).order_by(tickets.c.id)))

    def all_labelled() -> bool:
        return all(row.label is not None for row in rows())

    first = app_tables.add(FIRST, scheduled.env["TICKETS_DATABASE_URL"])
    wait_for(scheduled, "the first tickets are not labelled", all_labelled)
    # Beat keeps running: tickets added later go out in a later run.
    later = app_tables.add(LATER, scheduled.env["TICKETS_DATABASE_URL"])
    wait_for(scheduled, "the later tickets are not labelled", all_labelled)

    labelled = rows()
    assert [row.id for row in labelled] == first + later
    for row in labelled:
        assert row.label in app_tables.LABELS and row.error is None and row.bulk_id
    first_bulks = {row.bulk_id for row in labelled if row.id in first}
    later_bulks = {row.bulk_id for row in labelled if row.id in later}
    assert first_bulks.isdisjoint(later_bulks)

    # Every ticket was sent once: one flexpipe job each, one provider request each.
    store = scheduled.store
    jobs = store.list_jobs(limit=10_000)
    per_ticket = collections.Counter(job.request.metadata.get("ticket") for job in jobs)
    assert per_ticket == collections.Counter(str(row.id) for row in labelled)
    stats = scheduled.emulator("/_emulator/stats")["responses"].values()
    creates = collections.Counter(
        record["metadata"]["flexpipe_job_id"] for record in stats if record.get("metadata")
    )
    assert all(creates[job.id] == 1 for job in jobs)

    # Runs with nothing to do made no bulk job; each bulk's completion callback was sent
    # (flexpipe will not send it again) and ran exactly once.
    with store.engine.connect() as conn:
        made = set(conn.execute(sa.select(bulks.c.id)).scalars())
    assert made == first_bulks | later_bulks

    def callbacks_settled() -> bool:
        with store.engine.connect() as conn:
            due = sa.or_(
                bulks.c.on_complete_sent_at.is_(None), bulks.c.on_complete_due_at.is_not(None)
            )
            query = sa.select(sa.func.count()).select_from(bulks).where(due)
            return conn.execute(query).scalar_one() == 0

    wait_for(scheduled, "completion callbacks are still due", callbacks_settled)
    with engine.connect() as conn:
        done = collections.Counter(conn.execute(sa.select(runs.c.bulk_id)).scalars())
        labels = conn.execute(sa.select(sa.func.sum(runs.c.labelled), sa.func.sum(runs.c.failed)))
        assert labels.one() == (len(first + later), 0)
    assert done == collections.Counter(first_bulks | later_bulks)
