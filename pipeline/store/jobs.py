"""Job writes: enqueue, the submit lease, the poll chain, finishing and redrive.

Every state change is a single guarded ``UPDATE`` (``WHERE status IN (...)`` or
``WHERE poll_seq = ...``), so running any step twice changes nothing the second time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from flexpipe.errors import ConstraintViolated, JobNotFound
from flexpipe.models import Job, Usage, output_items_for
from flexpipe.schema import attempts, bulks, jobs, results
from flexpipe.states import JobStatus
from flexpipe.store.engine import Database, retrying
from flexpipe.store.records import Finished, NewJob, Outcome, new_id
from flexpipe.store.rows import aware, to_job
from flexpipe.store.statements import (
    CLAIM_SUBMIT,
    CLAIM_SUBMITS,
    FINISH_ATTEMPT,
    FINISH_JOB,
    FINISH_POLLED_JOB,
    GET_JOB,
    IN_FLIGHT_STATUS,
    RECORD_SUBMITTED,
    present,
)


class JobWrites(Database):
    """Writes that move one job along its states."""

    # -- enqueue ---------------------------------------------------------------------------

    def add_jobs(self, new_jobs: Sequence[NewJob]) -> list[tuple[str, bool]]:
        """Insert jobs as ``pending``; return ``(job_id, created)`` for each.

        A job whose idempotency key already exists is not inserted again; its existing id
        comes back with ``created=False``.
        """
        now = self.now()
        with self.engine.begin() as conn:
            rows, out = new_rows(conn, new_jobs, now)
            if rows:
                conn.execute(jobs.insert(), rows)
        return out

    def add_job(self, job: NewJob) -> tuple[str, bool]:
        try:
            return self.add_jobs([job])[0]
        except ConstraintViolated:
            # Two enqueues with the same key raced; the other one won.
            if not job.idempotency_key:
                raise
            with self.engine.connect() as conn:
                found = ids_for_keys(conn, [job.idempotency_key])
            return found[job.idempotency_key], False

    def jobs_for_keys(self, keys: list[str]) -> dict[str, str]:
        """The ids of the jobs that use these idempotency keys (``{key: job_id}``)."""
        with self.engine.connect() as conn:
            return ids_for_keys(conn, keys) if keys else {}

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
            row = conn.execute(CLAIM_SUBMIT, params).mappings().first()
        return None if row is None else to_job(row)

    def claim_submits(
        self, job_ids: Sequence[str], lease_s: float, blocking_lease_s: float | None = None
    ) -> list[Job]:
        """:meth:`claim_submit` for many jobs in one statement: the jobs whose lease this
        took (those not pending, or leased by another submit, are left out)."""
        if not job_ids:
            return []
        now = self.now()
        params = {
            "b_ids": list(job_ids),
            "b_now": now,
            "b_lease_until": now + timedelta(seconds=lease_s),
            "b_blocking_until": now + timedelta(seconds=blocking_lease_s or lease_s),
        }
        with self.engine.begin() as conn:
            rows = conn.execute(CLAIM_SUBMITS, params).mappings().all()
        return [to_job(row) for row in rows]

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
                RECORD_SUBMITTED,
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
                    IN_FLIGHT_STATUS,
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
            row = conn.execute(FINISH_POLLED_JOB if polled else FINISH_JOB, params).first()
            if row is None:
                if conn.execute(GET_JOB, {"job_id": job_id}).first() is None:
                    raise JobNotFound(f"no job with id {job_id!r}")
                return None
            latency = None
            if outcome.provider_completed_at and row.submitted_at:
                completed = outcome.provider_completed_at
                if completed.microsecond == 0:
                    # Providers report whole seconds: the job ended within that second.
                    completed += timedelta(seconds=0.5)
                submitted = aware(row.submitted_at)
                latency = max(0.0, (completed - submitted).total_seconds())
            result = {
                "job_id": job_id,
                "status": outcome.status.value,
                "response_id": outcome.response_id,
                # The text is stored once, inside the items; reads derive it from them.
                "output": output_items_for(outcome.output, outcome.output_text),
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
            conn.execute(FINISH_ATTEMPT, {**params, "b_attempt": row.attempt})
            if row.bulk_id is None:
                return Finished(job_id)
            return count_in_bulk(conn, job_id, row.bulk_id, outcome.status, now)

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
                "callback_sent_at": None,
                "callback_received_at": None,
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


def new_rows(
    conn: sa.Connection, new_jobs: Sequence[NewJob], now: datetime
) -> tuple[list[dict[str, Any]], list[tuple[str, bool]]]:
    """Rows to insert, and ``(job_id, created)`` per job (a known key: not created)."""
    keys = [j.idempotency_key for j in new_jobs if j.idempotency_key]
    existing = ids_for_keys(conn, keys) if keys else {}
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
        rows.append(job_row(job_id, job, now))
        out.append((job_id, True))
    return rows, out


def ids_for_keys(conn: sa.Connection, keys: list[str]) -> dict[str, str]:
    query = sa.select(jobs.c.idempotency_key, jobs.c.id).where(jobs.c.idempotency_key.in_(keys))
    return {row.idempotency_key: row.id for row in conn.execute(query)}


def job_row(job_id: str, job: NewJob, now: datetime) -> dict[str, Any]:
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


def count_in_bulk(
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
            on_complete_due_at=sa.case((present(bulks.c.on_complete), now), else_=None),
        )
        .returning(bulks.c.on_complete)
    ).first()
    if on_complete is None:
        return Finished(job_id, bulk_id)
    return Finished(job_id, bulk_id, bulk_on_complete=on_complete[0], bulk_finished=True)
