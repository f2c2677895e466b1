"""Job reads: one job, its result and attempts, lists and counts, latency samples."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from flexpipe.errors import JobNotFound
from flexpipe.models import Job, Result
from flexpipe.schema import attempts, jobs, results
from flexpipe.states import JobStatus
from flexpipe.store.engine import Database
from flexpipe.store.rows import aware, to_job, to_result
from flexpipe.store.statements import GAVE_UP, GET_JOB, IN_FLIGHT_VALUES


class JobReads(Database):
    """Reads of jobs and results; none of them writes."""

    def get_job(self, job_id: str) -> Job | None:
        with self.engine.connect() as conn:
            row = conn.execute(GET_JOB, {"job_id": job_id}).mappings().first()
        return None if row is None else to_job(row)

    def require_job(self, job_id: str) -> Job:
        job = self.get_job(job_id)
        if job is None:
            raise JobNotFound(f"no job with id {job_id!r}")
        return job

    def get_result(self, job_id: str) -> Result | None:
        with self.engine.connect() as conn:
            query = sa.select(results).where(results.c.job_id == job_id)
            row = conn.execute(query).mappings().first()
        return None if row is None else to_result(row)

    def list_jobs(
        self, *, status: str | None = None, limit: int = 50, bulk_id: str | None = None
    ) -> list[Job]:
        query = sa.select(jobs).order_by(jobs.c.created_at.desc()).limit(limit)
        if status:
            query = query.where(jobs.c.status == status)
        if bulk_id:
            query = query.where(jobs.c.bulk_id == bulk_id)
        with self.engine.connect() as conn:
            return [to_job(row) for row in conn.execute(query).mappings()]

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
                elif status in IN_FLIGHT_VALUES:
                    waiting.append((now - aware(submitted_at)).total_seconds())
                elif status in GAVE_UP and finished_at is not None:
                    waiting.append((aware(finished_at) - aware(submitted_at)).total_seconds())
        return finished, waiting

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
