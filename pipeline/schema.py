"""The SQL tables, as SQLAlchemy Core metadata (Alembic migrations are written from it).

``flexpipe_jobs`` is the source of truth for every job's state and schedule;
``flexpipe_results`` holds what the provider returned, one row per finished job;
``flexpipe_attempts`` keeps one row per provider request, so redrives keep history;
``flexpipe_bulks`` counts the finished jobs of a bulk job, in the same transaction that
finishes each one, so its completion callback fires exactly once;
``flexpipe_webhook_events`` remembers each webhook delivery by its ``webhook-id`` (a
provider delivers again until it gets a 2xx), and holds an event that came before its
job's response id was recorded until the job is found;
``flexpipe_receivers`` lists the callback queues whose workers record receipts;
``flexpipe_heartbeats`` keeps one row per periodic duty (the sweeper) saying when, where
and by whom it last ran, so ``flexpipe doctor`` can tell a beat that stopped.

The indexes follow the queries, and a table of years of finished jobs must not slow the
live work down: every sweeper query has a partial index on the rows still live (a few
thousand, whatever the history), and no index holds a column that a poll changes
(``next_poll_at``, ``poll_seq``, ``poll_count``, ``parked``, ``updated_at``,
``started_at``), so on PostgreSQL a poll is a HOT update that rewrites no index.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)

from flexpipe.states import IN_FLIGHT, TERMINAL, JobStatus

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

UtcDateTime = DateTime(timezone=True)


def _where(predicate: str) -> dict[str, Any]:
    """A partial index's predicate, the same on PostgreSQL and SQLite."""
    return {"postgresql_where": text(predicate), "sqlite_where": text(predicate)}


def _status_in(values: list[str]) -> str:
    return "status IN (" + ", ".join(f"'{v}'" for v in values) + ")"


#: Statuses a job can still leave, and those the provider holds, in a fixed order: SQLite
#: uses a partial index only for a query that repeats its predicate as written.
LIVE = [s.value for s in JobStatus if s not in TERMINAL]
IN_FLIGHT_VALUES = [s.value for s in JobStatus if s in IN_FLIGHT]
LIVE_SQL = _status_in(LIVE)
IN_FLIGHT_SQL = _status_in(IN_FLIGHT_VALUES)
PENDING_SQL = "status = 'pending'"

jobs = Table(
    "flexpipe_jobs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("idempotency_key", String(255), unique=True),
    Column("bulk_id", String(32), index=True),
    Column("model", String(256), nullable=False),
    Column("requested_tier", String(16), nullable=False),
    Column("mode", String(16), nullable=False),
    Column("request", JSON, nullable=False),
    Column("callback", JSON),
    Column("response_id", String(128)),
    Column("attempt", Integer, nullable=False, default=1),
    Column("poll_count", Integer, nullable=False, default=0),
    #: Fencing token of the live poll chain: a poll message with an older number stops.
    Column("poll_seq", Integer, nullable=False, default=0),
    #: When the next poll is due; a live chain keeps this in the future.
    Column("next_poll_at", UtcDateTime),
    #: True when the next poll waits in SQL (no message exists) until the sweeper sends it.
    Column("parked", Boolean, nullable=False, default=False),
    #: A submit in progress holds this lease so a duplicate submit message does nothing.
    Column("lease_until", UtcDateTime),
    #: Last time a submit message was published for a pending job.
    Column("dispatched_at", UtcDateTime),
    Column("deadline_at", UtcDateTime),
    Column("escalate", Boolean, nullable=False, default=False),
    Column("error_code", String(64)),
    Column("error_message", Text),
    Column("created_at", UtcDateTime, nullable=False),
    Column("submitted_at", UtcDateTime),
    Column("started_at", UtcDateTime),
    Column("finished_at", UtcDateTime),
    #: Set when a terminal job's callback must be sent; cleared once it was.
    Column("callback_due_at", UtcDateTime),
    Column("callback_sent_at", UtcDateTime),
    #: When a worker that records receipts started the sent callback (``flexpipe.tasks.delivery``).
    Column("callback_received_at", UtcDateTime),
    Column("updated_at", UtcDateTime, nullable=False),
    #: ``flexpipe list``: the newest jobs, with or without a status.
    Index("ix_flexpipe_jobs_created_at", "created_at"),
    Index("ix_flexpipe_jobs_status_created_at", "status", "created_at"),
    #: ``flexpipe retry --status failed --since 1d``, and prune's finished jobs.
    Index("ix_flexpipe_jobs_status_finished_at", "status", "finished_at"),
    #: The sweeper's rows, each index holding only the live ones. Lost poll chains are
    #: found among the in-flight rows by ``next_poll_at`` read from the table, which keeps
    #: that column (written by every poll) out of every index.
    Index("ix_flexpipe_jobs_in_flight", "submitted_at", **_where(IN_FLIGHT_SQL)),
    Index(
        "ix_flexpipe_jobs_pending_dispatched_at",
        "dispatched_at",
        **_where(PENDING_SQL),
    ),
    Index("ix_flexpipe_jobs_live_deadline_at", "deadline_at", **_where(LIVE_SQL)),
    Index(
        "ix_flexpipe_jobs_callback_due_at",
        "callback_due_at",
        **_where("callback_due_at IS NOT NULL"),
    ),
    #: The sweeper looks for callbacks sent long ago and never received.
    Index("ix_flexpipe_jobs_callback_received_at", "callback_received_at", "callback_sent_at"),
    #: The latency fit reads the jobs of one model and tier submitted last.
    Index("ix_flexpipe_jobs_model_tier_submitted_at", "model", "requested_tier", "submitted_at"),
    #: A webhook names the provider's response id, not ours.
    Index("ix_flexpipe_jobs_response_id", "response_id"),
    # PostgreSQL's fillfactor 80 (room in each page for a poll's new row version, so the
    # HOT update stays on its page) is set by migration 0007, not here: SQLAlchemy's
    # ``postgresql_with`` table option is newer than our floor (pyproject.toml).
)

results = Table(
    "flexpipe_results",
    metadata,
    Column(
        "job_id", String(32), ForeignKey("flexpipe_jobs.id", ondelete="CASCADE"), primary_key=True
    ),
    Column("status", String(16), nullable=False),
    Column("response_id", String(128)),
    #: The output items; the output text is read from them (stored once).
    Column("output", JSON),
    Column("parsed", JSON),
    Column("input_tokens", Integer, nullable=False, default=0),
    Column("cached_tokens", Integer, nullable=False, default=0),
    Column("output_tokens", Integer, nullable=False, default=0),
    Column("reasoning_tokens", Integer, nullable=False, default=0),
    Column("total_tokens", Integer, nullable=False, default=0),
    Column("served_tier", String(16)),
    Column("error_code", String(64)),
    Column("error_message", Text),
    Column("incomplete_reason", String(64)),
    Column("provider_created_at", UtcDateTime),
    Column("provider_completed_at", UtcDateTime),
    #: Seconds from submit to the provider's completion, for the learned poll schedule.
    Column("latency_s", Float),
    Column("stored_at", UtcDateTime, nullable=False),
)

attempts = Table(
    "flexpipe_attempts",
    metadata,
    Column(
        "job_id", String(32), ForeignKey("flexpipe_jobs.id", ondelete="CASCADE"), primary_key=True
    ),
    Column("attempt", Integer, primary_key=True),
    Column("response_id", String(128)),
    Column("service_tier", String(16)),
    Column("status", String(16)),
    Column("error_code", String(64)),
    Column("error_message", Text),
    Column("submitted_at", UtcDateTime),
    Column("finished_at", UtcDateTime),
)

bulks = Table(
    "flexpipe_bulks",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(255)),
    Column("total", Integer, nullable=False),
    #: Terminal jobs so far; the bulk is finished when ``done == total``.
    Column("done", Integer, nullable=False, default=0),
    Column("completed", Integer, nullable=False, default=0),
    Column("failed", Integer, nullable=False, default=0),
    Column("incomplete", Integer, nullable=False, default=0),
    Column("cancelled", Integer, nullable=False, default=0),
    Column("expired", Integer, nullable=False, default=0),
    Column("on_complete", JSON),
    Column("created_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime),
    Column("on_complete_due_at", UtcDateTime),
    Column("on_complete_sent_at", UtcDateTime),
    Column("on_complete_received_at", UtcDateTime),
    Index(
        "ix_flexpipe_bulks_on_complete_due_at",
        "on_complete_due_at",
        **_where("on_complete_due_at IS NOT NULL"),
    ),
    #: Prune's finished bulks.
    Index("ix_flexpipe_bulks_finished_at", "finished_at"),
)

webhook_events = Table(
    "flexpipe_webhook_events",
    metadata,
    #: The ``webhook-id`` header: the same on every delivery of one event.
    Column("id", String(255), primary_key=True),
    Column("event_id", String(255)),
    Column("type", String(64), nullable=False),
    #: The id the event is about (``data.id``: a response id).
    Column("object_id", String(128), nullable=False),
    #: The job the event was matched to; None while no job has that response id yet.
    Column("job_id", String(32)),
    Column("received_at", UtcDateTime, nullable=False),
    #: When the event's job was sent its poll (or found needing none); None: not yet.
    Column("handled_at", UtcDateTime),
    Index("ix_flexpipe_webhook_events_object_id", "object_id"),
    Index("ix_flexpipe_webhook_events_handled_at_received_at", "handled_at", "received_at"),
)

#: Queues consumed by a worker that records callback receipts, with when it last said so
#: (``flexpipe.tasks.delivery``): the sweeper re-sends an unreceived callback only when its
#: queue has such a worker, since elsewhere no receipt would ever be recorded.
receivers = Table(
    "flexpipe_receivers",
    metadata,
    Column("queue", String(255), primary_key=True),
    Column("seen_at", UtcDateTime, nullable=False),
)

heartbeats = Table(
    "flexpipe_heartbeats",
    metadata,
    #: What beats: ``sweeper``.
    Column("name", String(64), primary_key=True),
    Column("beat_at", UtcDateTime, nullable=False),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
)
