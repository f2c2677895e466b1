"""The SQL store: the one module that reads and writes flexpipe's tables.

Every state change is a single guarded ``UPDATE`` (``WHERE status IN (...)`` or
``WHERE poll_seq = ...``), so running any step twice changes nothing the second time.
The same code runs on SQLite (the default) and PostgreSQL.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine, RowMapping

from flexpipe.errors import JobNotFound
from flexpipe.models import Bulk, Job, JobRequest, Result, Usage
from flexpipe.schema import attempts, bulks, jobs, metadata, results
from flexpipe.states import IN_FLIGHT, TERMINAL, JobStatus

log = logging.getLogger("flexpipe.store")

_LIVE = [s.value for s in JobStatus if s not in TERMINAL]
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
        assert isinstance(store, Store)
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


_IN_FLIGHT = [s.value for s in IN_FLIGHT]


def _one_of(column: sa.ColumnElement[str], values: Sequence[str]) -> sa.ColumnElement[bool]:
    """``column IN ('a', 'b')`` with the constants in the SQL text: the statement is cached
    whole, with no expanding bind to rewrite on every call (our own status names only)."""
    return column.in_([sa.literal_column(f"'{v}'") for v in values])


def _present(column: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
    """True if a JSON column holds a value: Python None is stored as JSON ``null``."""
    return sa.and_(column.is_not(None), sa.cast(column, sa.Text) != "null")


_GAVE_UP = (JobStatus.EXPIRED.value, JobStatus.CANCELLED.value)
_LIVE_STATUS = _one_of(jobs.c.status, _LIVE)
_IN_FLIGHT_STATUS = _one_of(jobs.c.status, _IN_FLIGHT)
_GET_JOB = sa.select(jobs).where(jobs.c.id == sa.bindparam("job_id"))

# The statements every job runs, built once with bind parameters: building a statement
# and its cache key per call cost ~10% of a worker's CPU (BENCHMARKS.md, figure 1).
# Parameter names start with ``b_``: a name equal to a column's would join the SET clause.
_b = sa.bindparam
_CLAIM_SUBMIT = (
    jobs.update()
    .where(
        jobs.c.id == _b("b_id"),
        jobs.c.status == JobStatus.PENDING.value,
        sa.or_(jobs.c.lease_until.is_(None), jobs.c.lease_until < _b("b_now")),
    )
    .values(
        lease_until=sa.case(
            (jobs.c.mode == "blocking", _b("b_blocking_until", type_=jobs.c.lease_until.type)),
            else_=_b("b_lease_until", type_=jobs.c.lease_until.type),
        ),
        updated_at=_b("b_now"),
    )
    .returning(*jobs.c)
)
_RECORD_SUBMITTED = (
    jobs.update()
    .where(jobs.c.id == _b("b_id"), jobs.c.status == JobStatus.PENDING.value)
    .values(
        status=_b("b_status"),
        response_id=_b("b_response_id"),
        submitted_at=_b("b_now"),
        started_at=_b("b_started_at"),
        lease_until=None,
        poll_seq=jobs.c.poll_seq + 1,
        next_poll_at=_b("b_next_poll_at"),
        parked=_b("b_parked"),
        updated_at=_b("b_now"),
    )
    .returning(jobs.c.poll_seq)
)
_FINISH_VALUES: dict[str, Any] = {
    "status": _b("b_status"),
    "finished_at": _b("b_now"),
    "error_code": _b("b_error_code"),
    "error_message": _b("b_error_message"),
    "next_poll_at": None,
    "parked": False,
    "lease_until": None,
    "callback_due_at": sa.case(
        (_present(jobs.c.callback), _b("b_now", type_=jobs.c.callback_due_at.type)), else_=None
    ),
    "updated_at": _b("b_now"),
}
_FINISH_JOB = (
    jobs.update()
    .where(jobs.c.id == _b("b_id"), _LIVE_STATUS)
    .values(_FINISH_VALUES)
    .returning(jobs.c.submitted_at, jobs.c.attempt, jobs.c.bulk_id)
)
#: The same, counting the provider read that saw the outcome.
_FINISH_POLLED_JOB = _FINISH_JOB.values(poll_count=jobs.c.poll_count + 1)
_FINISH_ATTEMPT = (
    attempts.update()
    .where(attempts.c.job_id == _b("b_id"), attempts.c.attempt == _b("b_attempt"))
    .values(
        status=_b("b_status"),
        error_code=_b("b_error_code"),
        error_message=_b("b_error_message"),
        finished_at=_b("b_now"),
    )
)


def new_id() -> str:
    """A new job id: 32 hex characters."""
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class Outcome:
    """Everything stored when a job reaches a terminal status."""

    status: JobStatus
    response_id: str | None = None
    output_text: str | None = None
    output: list[dict[str, Any]] | None = None
    parsed: Any = None
    usage: Usage | None = None
    served_tier: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    incomplete_reason: str | None = None
    provider_created_at: datetime | None = None
    provider_completed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Finished:
    """What a winning :meth:`Store.finish` did: the job is terminal, maybe its bulk too."""

    job_id: str
    bulk_id: str | None = None
    #: Set when this job was the last of its bulk: the bulk's completion callback.
    bulk_on_complete: dict[str, Any] | None = None
    bulk_finished: bool = False


@dataclass(frozen=True, slots=True)
class NewJob:
    request: JobRequest
    idempotency_key: str | None = None
    callback: dict[str, Any] | None = None
    deadline_at: datetime | None = None
    escalate: bool = False
    bulk_id: str | None = None
    id: str | None = None


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


class Store:
    """Reads and writes jobs and results; every method is one short transaction."""

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
        self._upsert_result = _upsert_result(engine.dialect.name)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Store:
        return cls(make_engine(url, **kwargs))

    def now(self) -> datetime:
        return self._clock()

    def create_tables(self) -> None:
        """Create the tables directly (tests); production uses ``flexpipe db upgrade``."""
        metadata.create_all(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()

    # -- enqueue ---------------------------------------------------------------------------

    def add_jobs(self, new_jobs: Sequence[NewJob]) -> list[tuple[str, bool]]:
        """Insert jobs as ``pending``; return ``(job_id, created)`` for each.

        A job whose idempotency key already exists is not inserted again; its existing id
        comes back with ``created=False``.
        """
        now = self.now()
        with self.engine.begin() as conn:
            rows, out = self._new_rows(conn, new_jobs, now)
            if rows:
                conn.execute(jobs.insert(), rows)
        return out

    def _new_rows(
        self, conn: sa.Connection, new_jobs: Sequence[NewJob], now: datetime
    ) -> tuple[list[dict[str, Any]], list[tuple[str, bool]]]:
        """Rows to insert, and ``(job_id, created)`` per job (a known key: not created)."""
        keys = [j.idempotency_key for j in new_jobs if j.idempotency_key]
        existing = self._ids_for_keys(conn, keys) if keys else {}
        rows: list[dict[str, Any]] = []
        out: list[tuple[str, bool]] = []
        for job in new_jobs:
            key = job.idempotency_key
            if key and key in existing:
                out.append((existing[key], False))
                continue
            job_id = job.id or new_id()
            if key:
                existing[key] = job_id
            rows.append(self._job_row(job_id, job, now))
            out.append((job_id, True))
        return rows, out

    def add_bulk(
        self,
        new_jobs: Sequence[NewJob],
        *,
        name: str | None,
        on_complete: dict[str, Any] | None,
        chunk: int = 1000,
    ) -> tuple[str, list[tuple[str, bool]]]:
        """Insert a bulk job and its items (in chunks of ``chunk`` rows); return the ids.

        Items whose idempotency key already exists are not inserted again and do not count
        towards the bulk's total.
        """
        bulk_id = new_id()
        now = self.now()
        with self.engine.begin() as conn:
            items = [replace(job, bulk_id=bulk_id) for job in new_jobs]
            rows, out = self._new_rows(conn, items, now)
            conn.execute(
                bulks.insert().values(
                    id=bulk_id,
                    name=name,
                    total=len(rows),
                    done=0,
                    completed=0,
                    failed=0,
                    incomplete=0,
                    cancelled=0,
                    expired=0,
                    on_complete=on_complete,
                    created_at=now,
                    finished_at=now if not rows else None,
                    on_complete_due_at=now if not rows and on_complete else None,
                )
            )
            for start in range(0, len(rows), chunk):
                conn.execute(jobs.insert(), rows[start : start + chunk])
        return bulk_id, out

    def get_bulk(self, bulk_id: str) -> Bulk | None:
        """The bulk's counters, plus how many of its jobs are pending and in flight now.

        One statement, so the counters and the live counts come from one snapshot.
        """

        def live_count(statuses: list[str]) -> sa.ScalarSelect[int]:
            return (
                sa.select(sa.func.count())
                .select_from(jobs)
                .where(jobs.c.bulk_id == bulk_id, jobs.c.status.in_(statuses))
                .scalar_subquery()
            )

        query = sa.select(
            bulks,
            live_count([JobStatus.PENDING.value]).label("pending"),
            live_count(_IN_FLIGHT).label("in_flight"),
        ).where(bulks.c.id == bulk_id)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        if row is None:
            return None
        return Bulk(
            id=row["id"],
            name=row["name"],
            total=row["total"],
            done=row["done"],
            completed=row["completed"],
            failed=row["failed"],
            incomplete=row["incomplete"],
            cancelled=row["cancelled"],
            expired=row["expired"],
            pending=row["pending"],
            in_flight=row["in_flight"],
            created_at=_aware(row["created_at"]),
            finished_at=_maybe(row["finished_at"]),
        )

    def bulk_job_ids(self, bulk_id: str) -> list[str]:
        with self.engine.connect() as conn:
            query = sa.select(jobs.c.id).where(jobs.c.bulk_id == bulk_id).order_by(jobs.c.id)
            return [row.id for row in conn.execute(query)]

    def bulk_items(self, bulk_id: str) -> list[tuple[Job, Result | None]]:
        """Every job of a bulk (ordered by id) with its result once it is terminal.

        Jobs are read before results: a job read as terminal has its result stored already
        (both are written in one transaction).
        """
        with self.engine.connect() as conn:
            job_rows = conn.execute(
                sa.select(jobs).where(jobs.c.bulk_id == bulk_id).order_by(jobs.c.id)
            ).mappings()
            found = [_job(row) for row in job_rows]
            ids = sa.select(jobs.c.id).where(jobs.c.bulk_id == bulk_id)
            result_rows = conn.execute(sa.select(results).where(results.c.job_id.in_(ids)))
            stored = {row["job_id"]: _result(row) for row in result_rows.mappings()}
        return [(job, stored.get(job.id) if job.terminal else None) for job in found]

    @retrying
    def on_complete_sent(self, bulk_id: str) -> None:
        now = self.now()
        with self.engine.begin() as conn:
            conn.execute(
                bulks.update()
                .where(bulks.c.id == bulk_id)
                .values(on_complete_due_at=None, on_complete_sent_at=now)
            )

    def take_due_bulk_callbacks(
        self, *, overdue_after: float, limit: int
    ) -> list[tuple[str, dict[str, Any]]]:
        """Finished bulks whose completion callback should have been sent by now."""
        now = self.now()
        before = now - timedelta(seconds=overdue_after)
        query = (
            sa.select(bulks.c.id, bulks.c.on_complete)
            .where(bulks.c.on_complete_due_at <= before)
            .limit(limit)
        )
        with self.engine.begin() as conn:
            rows = [(row.id, row.on_complete) for row in conn.execute(query)]
            if rows:
                conn.execute(
                    bulks.update()
                    .where(bulks.c.id.in_([r[0] for r in rows]))
                    .values(on_complete_due_at=now)
                )
        return rows

    def add_job(self, job: NewJob) -> tuple[str, bool]:
        try:
            return self.add_jobs([job])[0]
        except sa.exc.IntegrityError:
            # Two enqueues with the same key raced; the other one won.
            if not job.idempotency_key:
                raise
            with self.engine.connect() as conn:
                found = self._ids_for_keys(conn, [job.idempotency_key])
            return found[job.idempotency_key], False

    @staticmethod
    def _ids_for_keys(conn: sa.Connection, keys: list[str]) -> dict[str, str]:
        query = sa.select(jobs.c.idempotency_key, jobs.c.id).where(jobs.c.idempotency_key.in_(keys))
        return {row.idempotency_key: row.id for row in conn.execute(query)}

    @staticmethod
    def _job_row(job_id: str, job: NewJob, now: datetime) -> dict[str, Any]:
        request = job.request
        return {
            "id": job_id,
            "status": JobStatus.PENDING.value,
            "idempotency_key": job.idempotency_key,
            "bulk_id": job.bulk_id,
            "model": request.model,
            "requested_tier": request.service_tier,
            "mode": request.mode,
            "request": request.to_json(),
            "callback": job.callback,
            "attempt": 1,
            "poll_count": 0,
            "poll_seq": 0,
            "parked": False,
            "escalate": job.escalate,
            "deadline_at": job.deadline_at,
            "created_at": now,
            "dispatched_at": now,
            "updated_at": now,
        }

    # -- reads -----------------------------------------------------------------------------

    def get_job(self, job_id: str) -> Job | None:
        with self.engine.connect() as conn:
            row = conn.execute(_GET_JOB, {"job_id": job_id}).mappings().first()
        return None if row is None else _job(row)

    def require_job(self, job_id: str) -> Job:
        job = self.get_job(job_id)
        if job is None:
            raise JobNotFound(f"no job with id {job_id!r}")
        return job

    def get_result(self, job_id: str) -> Result | None:
        with self.engine.connect() as conn:
            query = sa.select(results).where(results.c.job_id == job_id)
            row = conn.execute(query).mappings().first()
        return None if row is None else _result(row)

    def list_jobs(
        self, *, status: str | None = None, limit: int = 50, bulk_id: str | None = None
    ) -> list[Job]:
        query = sa.select(jobs).order_by(jobs.c.created_at.desc()).limit(limit)
        if status:
            query = query.where(jobs.c.status == status)
        if bulk_id:
            query = query.where(jobs.c.bulk_id == bulk_id)
        with self.engine.connect() as conn:
            return [_job(row) for row in conn.execute(query).mappings()]

    def status_counts(self, job_ids: Iterable[str] | None = None) -> dict[str, int]:
        query = sa.select(jobs.c.status, sa.func.count()).group_by(jobs.c.status)
        if job_ids is not None:
            query = query.where(jobs.c.id.in_(list(job_ids)))
        with self.engine.connect() as conn:
            return {status: count for status, count in conn.execute(query)}

    def latency_samples(
        self, model: str, tier: str, *, submitted_before: datetime | None = None, limit: int = 200
    ) -> tuple[list[float], list[float]]:
        """The ``limit`` jobs of ``model`` and ``tier`` submitted last (before
        ``submitted_before``): finished jobs' latencies (s), and how long the others have
        waited so far (still at the provider, or expired or cancelled there first).

        Sampling by submit time, not by store time, keeps a batch's slow jobs in the sample
        while they are still running (the latest *stored* results are its quickest).
        """
        now = self.now()
        query = (
            sa.select(jobs.c.status, jobs.c.submitted_at, jobs.c.finished_at, results.c.latency_s)
            .select_from(jobs.outerjoin(results, results.c.job_id == jobs.c.id))
            .where(
                jobs.c.model == model,
                jobs.c.requested_tier == tier,
                jobs.c.submitted_at <= (submitted_before or now),
            )
            .order_by(jobs.c.submitted_at.desc())
            .limit(limit)
        )
        finished: list[float] = []
        waiting: list[float] = []
        with self.engine.connect() as conn:
            for status, submitted_at, finished_at, latency in conn.execute(query):
                if latency is not None:
                    finished.append(float(latency))
                elif status in _IN_FLIGHT:
                    waiting.append((now - _aware(submitted_at)).total_seconds())
                elif status in _GAVE_UP and finished_at is not None:
                    waiting.append((_aware(finished_at) - _aware(submitted_at)).total_seconds())
        return finished, waiting

    # -- submit ----------------------------------------------------------------------------

    def claim_submit(
        self, job_id: str, lease_s: float, blocking_lease_s: float | None = None
    ) -> Job | None:
        """Take the submit lease of a pending job; None if it is not pending or leased.

        A blocking-mode job holds its connection until the provider is done, so its lease
        is ``blocking_lease_s`` (default: the same).
        """
        now = self.now()
        params = {
            "b_id": job_id,
            "b_now": now,
            "b_lease_until": now + timedelta(seconds=lease_s),
            "b_blocking_until": now + timedelta(seconds=blocking_lease_s or lease_s),
        }
        with self.engine.begin() as conn:
            row = conn.execute(_CLAIM_SUBMIT, params).mappings().first()
        return None if row is None else _job(row)

    @retrying
    def release_submit(self, job_id: str) -> None:
        """Give the submit lease back after a transient failure (a retry will claim it)."""
        now = self.now()
        with self.engine.begin() as conn:
            conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.status == JobStatus.PENDING.value)
                .values(lease_until=None, dispatched_at=now, updated_at=now)
            )

    @retrying
    def defer_submit(self, job_id: str, delay: float) -> None:
        """Park a pending job in SQL (over a rate limit); the sweeper submits it when due."""
        now = self.now()
        with self.engine.begin() as conn:
            conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.status == JobStatus.PENDING.value)
                .values(
                    lease_until=None,
                    parked=True,
                    next_poll_at=now + timedelta(seconds=delay),
                    dispatched_at=now,
                    updated_at=now,
                )
            )

    def take_due_submits(self, *, horizon: float, limit: int) -> list[tuple[str, float]]:
        """Claim parked pending jobs due within ``horizon`` s: ``(job_id, delay)`` each."""
        now = self.now()
        query = (
            sa.select(jobs.c.id, jobs.c.next_poll_at)
            .where(
                jobs.c.status == JobStatus.PENDING.value,
                jobs.c.parked.is_(True),
                jobs.c.next_poll_at <= now + timedelta(seconds=horizon),
            )
            .order_by(jobs.c.next_poll_at)
            .limit(limit)
        )
        if self._postgres:
            query = query.with_for_update(skip_locked=True)
        with self.engine.begin() as conn:
            rows = conn.execute(query).all()
            if not rows:
                return []
            conn.execute(
                jobs.update()
                .where(jobs.c.id.in_([r.id for r in rows]))
                .values(parked=False, dispatched_at=now, updated_at=now)
            )
        return [(r.id, max(0.0, (_aware(r.next_poll_at) - now).total_seconds())) for r in rows]

    @retrying
    def record_submitted(
        self,
        job_id: str,
        *,
        attempt: int,
        response_id: str,
        status: JobStatus,
        tier: str,
        next_poll_in: float,
        parked: bool,
    ) -> int | None:
        """Record the provider's response id; return the poll chain's fencing number."""
        now = self.now()
        with self.engine.begin() as conn:
            seq = conn.execute(
                _RECORD_SUBMITTED,
                {
                    "b_id": job_id,
                    "b_status": status.value,
                    "b_response_id": response_id,
                    "b_now": now,
                    "b_started_at": now if status is JobStatus.IN_PROGRESS else None,
                    "b_next_poll_at": now + timedelta(seconds=next_poll_in),
                    "b_parked": parked,
                },
            ).scalar()
            if seq is None:
                # Already recorded (a retry after a commit whose reply was lost)?
                mine = conn.execute(
                    sa.select(jobs.c.poll_seq).where(
                        jobs.c.id == job_id, jobs.c.response_id == response_id
                    )
                ).scalar()
                return None if mine is None else int(mine)
            conn.execute(
                attempts.insert(),
                {
                    "job_id": job_id,
                    "attempt": attempt,
                    "response_id": response_id,
                    "service_tier": tier,
                    "status": status.value,
                    "submitted_at": now,
                },
            )
        return int(seq)

    # -- poll ------------------------------------------------------------------------------

    @retrying
    def schedule_poll(
        self,
        job_id: str,
        seq: int,
        *,
        status: JobStatus,
        delay: float,
        parked: bool,
        polled: bool = True,
    ) -> int | None:
        """Record a non-terminal poll and schedule the next; None if the chain is stale."""
        now = self.now()
        values: dict[str, Any] = {
            "status": status.value,
            "poll_seq": seq + 1,
            "next_poll_at": now + timedelta(seconds=delay),
            "parked": parked,
            "updated_at": now,
        }
        if polled:
            values["poll_count"] = jobs.c.poll_count + 1
        if status is JobStatus.IN_PROGRESS:
            values["started_at"] = sa.func.coalesce(jobs.c.started_at, now)
        with self.engine.begin() as conn:
            updated = conn.execute(
                jobs.update()
                .where(
                    jobs.c.id == job_id,
                    jobs.c.poll_seq == seq,
                    _IN_FLIGHT_STATUS,
                )
                .values(**values)
            ).rowcount
        return seq + 1 if updated else None

    @retrying
    def count_poll(self, job_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                jobs.update().where(jobs.c.id == job_id).values(poll_count=jobs.c.poll_count + 1)
            )

    # -- finish ----------------------------------------------------------------------------

    @retrying
    def finish(self, job_id: str, outcome: Outcome, *, polled: bool = False) -> Finished | None:
        """Store a terminal outcome, the job's status and its bulk's counters in one
        transaction; ``polled`` counts the provider read that saw the outcome.

        Returns :class:`Finished` if this call moved the job to its terminal status; None
        if it was already terminal (then nothing is written: a second store changes nothing).
        """
        if not outcome.status.terminal:
            raise ValueError(f"{outcome.status} is not terminal")
        now = self.now()
        usage = outcome.usage or Usage()
        params = {
            "b_id": job_id,
            "b_now": now,
            "b_status": outcome.status.value,
            "b_error_code": outcome.error_code,
            "b_error_message": outcome.error_message,
        }
        with self.engine.begin() as conn:
            row = conn.execute(_FINISH_POLLED_JOB if polled else _FINISH_JOB, params).first()
            if row is None:
                if conn.execute(_GET_JOB, {"job_id": job_id}).first() is None:
                    raise JobNotFound(f"no job with id {job_id!r}")
                return None
            latency = None
            if outcome.provider_completed_at and row.submitted_at:
                completed = outcome.provider_completed_at
                if completed.microsecond == 0:
                    # Providers report whole seconds: the job ended within that second.
                    completed += timedelta(seconds=0.5)
                submitted = _aware(row.submitted_at)
                latency = max(0.0, (completed - submitted).total_seconds())
            result = {
                "job_id": job_id,
                "status": outcome.status.value,
                "response_id": outcome.response_id,
                "output_text": outcome.output_text,
                "output": outcome.output,
                "parsed": outcome.parsed,
                "input_tokens": usage.input_tokens,
                "cached_tokens": usage.cached_tokens,
                "output_tokens": usage.output_tokens,
                "reasoning_tokens": usage.reasoning_tokens,
                "total_tokens": usage.total_tokens,
                "served_tier": outcome.served_tier,
                "error_code": outcome.error_code,
                "error_message": outcome.error_message,
                "incomplete_reason": outcome.incomplete_reason,
                "provider_created_at": outcome.provider_created_at,
                "provider_completed_at": outcome.provider_completed_at,
                "latency_s": latency,
                "stored_at": now,
            }
            if self._upsert_result is None:  # neither PostgreSQL nor SQLite
                conn.execute(results.delete().where(results.c.job_id == job_id))
                conn.execute(results.insert(), result)
            else:  # an earlier attempt's result (``flexpipe retry``) is replaced
                conn.execute(self._upsert_result, result)
            conn.execute(_FINISH_ATTEMPT, {**params, "b_attempt": row.attempt})
            if row.bulk_id is None:
                return Finished(job_id)
            return self._count_in_bulk(conn, job_id, row.bulk_id, outcome.status, now)

    @staticmethod
    def _count_in_bulk(
        conn: sa.Connection, job_id: str, bulk_id: str, status: JobStatus, now: datetime
    ) -> Finished:
        counter = bulks.c[status.value]
        counts = conn.execute(
            bulks.update()
            .where(bulks.c.id == bulk_id)
            .values({bulks.c.done: bulks.c.done + 1, counter: counter + 1})
            .returning(bulks.c.done, bulks.c.total, bulks.c.finished_at)
        ).first()
        if counts is None or counts.done < counts.total or counts.finished_at is not None:
            return Finished(job_id, bulk_id)
        # This job brought ``done`` to ``total``: it finishes the bulk. Exactly one job
        # does, because the row lock taken above orders the increments.
        on_complete = conn.execute(
            bulks.update()
            .where(bulks.c.id == bulk_id, bulks.c.finished_at.is_(None))
            .values(
                finished_at=now,
                on_complete_due_at=sa.case((_present(bulks.c.on_complete), now), else_=None),
            )
            .returning(bulks.c.on_complete)
        ).first()
        if on_complete is None:
            return Finished(job_id, bulk_id)
        return Finished(
            job_id, bulk_id, bulk_on_complete=on_complete[0], bulk_finished=True
        )

    @retrying
    def callback_sent(self, job_id: str) -> None:
        now = self.now()
        with self.engine.begin() as conn:
            conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id)
                .values(callback_due_at=None, callback_sent_at=now)
            )

    # -- redrive ---------------------------------------------------------------------------

    @retrying
    def restart(
        self,
        job_id: str,
        *,
        reason: str,
        tier: str | None = None,
        deadline_at: datetime | None = None,
        only_from: Iterable[JobStatus] | None = None,
        expected_attempt: int | None = None,
    ) -> int | None:
        """Start a new attempt of a job: back to ``pending`` with ``attempt + 1``.

        The current attempt's row in ``flexpipe_attempts`` keeps its response id and gets
        ``reason``; the job forgets its response id and any live poll chain (the fencing
        number moves on). ``tier`` changes the service tier (escalation). ``only_from``
        limits the statuses a job may be restarted from; ``expected_attempt`` makes the
        restart happen only if the job is still on that attempt (two steps that both saw
        a reason to restart it then restart it once). Returns the new attempt number, or
        None if the job was not in an allowed status or attempt.
        """
        now = self.now()
        allowed = [s.value for s in (only_from or JobStatus)]
        with self.engine.begin() as conn:
            row = conn.execute(
                sa.select(jobs.c.status, jobs.c.attempt, jobs.c.bulk_id, jobs.c.request).where(
                    jobs.c.id == job_id
                )
            ).first()
            if row is None:
                raise JobNotFound(f"no job with id {job_id!r}")
            if expected_attempt is not None and row.attempt != expected_attempt:
                return None
            values: dict[str, Any] = {
                "status": JobStatus.PENDING.value,
                "attempt": row.attempt + 1,
                "response_id": None,
                "poll_seq": jobs.c.poll_seq + 1,
                "next_poll_at": None,
                "parked": False,
                "lease_until": None,
                "dispatched_at": now,
                "finished_at": None,
                "error_code": None,
                "error_message": None,
                "callback_due_at": None,
                "updated_at": now,
            }
            if tier is not None:
                values["request"] = {**row.request, "service_tier": tier}
                values["requested_tier"] = tier
            if deadline_at is not None:
                values["deadline_at"] = deadline_at
            updated = conn.execute(
                jobs.update()
                .where(
                    jobs.c.id == job_id,
                    jobs.c.status.in_(allowed),
                    jobs.c.attempt == row.attempt,
                )
                .values(**values)
            ).rowcount
            if not updated:
                return None
            conn.execute(
                attempts.update()
                .where(
                    attempts.c.job_id == job_id,
                    attempts.c.attempt == row.attempt,
                    attempts.c.finished_at.is_(None),
                )
                .values(status=row.status, error_message=reason, finished_at=now)
            )
            old = JobStatus(row.status)
            if old.terminal and row.bulk_id is not None:
                counter = bulks.c[old.value]
                conn.execute(
                    bulks.update()
                    .where(bulks.c.id == row.bulk_id)
                    .values({bulks.c.done: bulks.c.done - 1, counter: counter - 1})
                )
        return int(row.attempt) + 1

    def attempts(self, job_id: str) -> list[dict[str, Any]]:
        """Every provider request made for a job, oldest first."""
        query = sa.select(attempts).where(attempts.c.job_id == job_id).order_by(attempts.c.attempt)
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def failed_since(
        self, statuses: Iterable[JobStatus], since: datetime | None, limit: int
    ) -> list[str]:
        """Ids of jobs in ``statuses`` that finished after ``since`` (oldest first)."""
        query = (
            sa.select(jobs.c.id)
            .where(jobs.c.status.in_([s.value for s in statuses]))
            .order_by(jobs.c.finished_at)
            .limit(limit)
        )
        if since is not None:
            query = query.where(jobs.c.finished_at >= since)
        with self.engine.connect() as conn:
            return [row.id for row in conn.execute(query)]

    # -- sweeper ---------------------------------------------------------------------------

    def take_due_polls(
        self, *, overdue_after: float, horizon: float = 0.0, limit: int
    ) -> list[tuple[str, int, float]]:
        """Claim polls to send: parked ones due within ``horizon`` s, and lost chains.

        Returns ``(job_id, seq, delay)``: send poll ``seq`` in ``delay`` s (0 for a chain
        presumed lost, i.e. a poll ``overdue_after`` s late). The fencing number is *not*
        bumped: if the "lost" message is only late (a backed-up queue), whichever of the two
        runs first polls and moves the chain on, and the other finds itself stale and stops
        without a read. (Bumping here made every late message stale, and under a backlog
        longer than ``overdue_after`` each revival was itself revived: a livelock.) A lost
        chain's ``next_poll_at`` moves to now, so it is revived at most once per period.
        """
        now = self.now()
        lost_before = now - timedelta(seconds=overdue_after)
        due = sa.or_(
            sa.and_(
                jobs.c.parked.is_(True),
                jobs.c.next_poll_at <= now + timedelta(seconds=horizon),
            ),
            jobs.c.next_poll_at <= lost_before,
        )
        query = (
            sa.select(jobs.c.id, jobs.c.parked, jobs.c.next_poll_at, jobs.c.poll_seq)
            .where(jobs.c.status.in_(_IN_FLIGHT), due)
            .order_by(jobs.c.next_poll_at)
            .limit(limit)
        )
        if self._postgres:
            query = query.with_for_update(skip_locked=True)
        with self.engine.begin() as conn:
            rows = conn.execute(query).all()
            if not rows:
                return []
            parked = [r.id for r in rows if r.parked]
            lost = [r.id for r in rows if not r.parked]
            if parked:
                # Sent now with a countdown; the chain is live from here on.
                conn.execute(
                    jobs.update()
                    .where(jobs.c.id.in_(parked))
                    .values(parked=False, updated_at=now)
                )
            if lost:
                conn.execute(
                    jobs.update()
                    .where(jobs.c.id.in_(lost))
                    .values(next_poll_at=now, updated_at=now)
                )
        return [
            (
                r.id,
                int(r.poll_seq),
                max(0.0, (_aware(r.next_poll_at) - now).total_seconds()) if r.parked else 0.0,
            )
            for r in rows
        ]

    def take_stale_pending(self, *, stale_after: float, limit: int) -> list[str]:
        """Pending jobs whose submit message was sent ``stale_after`` s ago and never ran."""
        now = self.now()
        before = now - timedelta(seconds=stale_after)
        query = (
            sa.select(jobs.c.id)
            .where(
                jobs.c.status == JobStatus.PENDING.value,
                jobs.c.parked.is_(False),
                jobs.c.dispatched_at <= before,
                sa.or_(jobs.c.lease_until.is_(None), jobs.c.lease_until < now),
            )
            .order_by(jobs.c.created_at)
            .limit(limit)
        )
        if self._postgres:
            query = query.with_for_update(skip_locked=True)
        with self.engine.begin() as conn:
            ids = [row.id for row in conn.execute(query)]
            if ids:
                conn.execute(jobs.update().where(jobs.c.id.in_(ids)).values(dispatched_at=now))
        return ids

    def past_deadline(self, *, limit: int) -> list[Job]:
        now = self.now()
        query = (
            sa.select(jobs)
            .where(jobs.c.status.in_(_LIVE), jobs.c.deadline_at <= now)
            .order_by(jobs.c.deadline_at)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [_job(row) for row in conn.execute(query).mappings()]

    def take_due_callbacks(
        self, *, overdue_after: float, limit: int
    ) -> list[tuple[str, dict[str, Any], int]]:
        """Terminal jobs whose callback should have been sent ``overdue_after`` s ago:
        ``(job id, callback, attempt)``."""
        now = self.now()
        before = now - timedelta(seconds=overdue_after)
        query = (
            sa.select(jobs.c.id, jobs.c.callback, jobs.c.attempt)
            .where(jobs.c.callback_due_at <= before)
            .order_by(jobs.c.callback_due_at)
            .limit(limit)
        )
        with self.engine.begin() as conn:
            rows = [(row.id, row.callback, row.attempt) for row in conn.execute(query)]
            if rows:
                conn.execute(
                    jobs.update()
                    .where(jobs.c.id.in_([r[0] for r in rows]))
                    .values(callback_due_at=now)
                )
        return rows


def _upsert_result(dialect: str) -> sa.Insert | None:
    """``INSERT ... ON CONFLICT (job_id) DO UPDATE`` for results, where the dialect has it."""
    insert: Any
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        return None
    statement = insert(results)
    changed = {c.name: statement.excluded[c.name] for c in results.c if c.name != "job_id"}
    upsert: sa.Insert = statement.on_conflict_do_update(
        index_elements=[results.c.job_id], set_=changed
    )
    return upsert


def _aware(value: datetime | None) -> datetime:
    assert value is not None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _maybe(value: datetime | None) -> datetime | None:
    return None if value is None else _aware(value)


def _job(row: RowMapping) -> Job:
    return Job(
        id=row["id"],
        status=JobStatus(row["status"]),
        request=JobRequest.from_json(row["request"]),
        idempotency_key=row["idempotency_key"],
        callback=row["callback"],
        response_id=row["response_id"],
        attempt=row["attempt"],
        poll_count=row["poll_count"],
        poll_seq=row["poll_seq"],
        created_at=_aware(row["created_at"]),
        submitted_at=_maybe(row["submitted_at"]),
        started_at=_maybe(row["started_at"]),
        finished_at=_maybe(row["finished_at"]),
        next_poll_at=_maybe(row["next_poll_at"]),
        deadline_at=_maybe(row["deadline_at"]),
        error_code=row["error_code"],
        error_message=row["error_message"],
        bulk_id=row["bulk_id"],
        escalate=bool(row["escalate"]),
    )


def _result(row: RowMapping) -> Result:
    return Result(
        job_id=row["job_id"],
        status=JobStatus(row["status"]),
        response_id=row["response_id"],
        output_text=row["output_text"],
        output=row["output"],
        parsed=row["parsed"],
        usage=Usage(
            input_tokens=row["input_tokens"],
            cached_tokens=row["cached_tokens"],
            output_tokens=row["output_tokens"],
            reasoning_tokens=row["reasoning_tokens"],
            total_tokens=row["total_tokens"],
        ),
        served_tier=row["served_tier"],
        error_code=row["error_code"],
        error_message=row["error_message"],
        incomplete_reason=row["incomplete_reason"],
        provider_created_at=_maybe(row["provider_created_at"]),
        provider_completed_at=_maybe(row["provider_completed_at"]),
        stored_at=_aware(row["stored_at"]),
    )
