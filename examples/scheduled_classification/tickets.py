"""The application's side: a support-ticket table that a scheduled job labels.

A ticket is waiting while ``label`` and ``bulk_id`` are both NULL. The job sets ``bulk_id``
(the flexpipe bulk job it went out in) when it sends the ticket; the bulk's completion
callback sets ``label``, or ``error`` when the ticket could not be classified.
``classification_runs`` gets one row per completion callback.

    python -m examples.scheduled_classification.tickets     # create the tables, add samples
"""

from __future__ import annotations

import functools
import os

import sqlalchemy as sa

LABELS = ["billing", "bug", "account", "other"]
DEFAULT_URL = "sqlite:///.flexpipe/tickets.db"

metadata = sa.MetaData()

tickets = sa.Table(
    "tickets",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("label", sa.String(32)),
    #: The flexpipe bulk job the ticket was sent in (NULL: not sent yet).
    sa.Column("bulk_id", sa.String(32), index=True),
    sa.Column("error", sa.Text),
)

runs = sa.Table(
    "classification_runs",
    metadata,
    sa.Column("n", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("bulk_id", sa.String(32), nullable=False),
    sa.Column("labelled", sa.Integer, nullable=False),
    sa.Column("failed", sa.Integer, nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
)

#: Tickets no job has sent yet.
WAITING = sa.and_(tickets.c.label.is_(None), tickets.c.bulk_id.is_(None))

SAMPLES = [
    "I was charged twice for my March invoice, please refund one payment.",
    "The export button crashes the app with error 500 since the last update.",
    "How do I change the email address on my account?",
    "Your office in Leeds: is it open on bank holidays?",
    "The invoice total does not match the price on your website.",
    "Search returns no results when the query contains an apostrophe.",
    "Please delete my account and all my data.",
    "Do you sponsor local football clubs?",
]


def database_url() -> str:
    """The app's database: ``TICKETS_DATABASE_URL``, else SQLite in ``.flexpipe/``.

    With SQLite, keep it a file of its own (not flexpipe's): the job holds a write
    transaction on it while flexpipe writes its own tables.
    """
    return os.environ.get("TICKETS_DATABASE_URL") or DEFAULT_URL


def engine() -> sa.Engine:
    return engine_for(database_url())


@functools.cache
def engine_for(url: str) -> sa.Engine:
    """One engine per database and process."""
    if url.startswith("sqlite"):
        return sa.create_engine(url, connect_args={"timeout": 30})
    return sa.create_engine(url, pool_pre_ping=True)


def create_tables(url: str | None = None) -> None:
    metadata.create_all(engine_for(url or database_url()))


def add(bodies: list[str], url: str | None = None) -> list[int]:
    """Insert tickets; return their ids."""
    with engine_for(url or database_url()).begin() as conn:
        return [
            conn.execute(tickets.insert().values(body=body)).inserted_primary_key[0]
            for body in bodies
        ]


def main() -> None:
    create_tables()
    with engine().connect() as conn:
        empty = conn.execute(sa.select(sa.func.count()).select_from(tickets)).scalar_one() == 0
    if empty:
        add(SAMPLES)
    with engine().connect() as conn:
        for row in conn.execute(sa.select(tickets).order_by(tickets.c.id)):
            state = row.label or (f"error: {row.error}" if row.error else None)
            state = state or ("sent" if row.bulk_id else "waiting")
            print(f"{row.id:>4}  {state:<10}  {row.body[:70]}")


if __name__ == "__main__":
    main()
