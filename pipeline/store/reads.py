"""Job reads: one job, its result and attempts, lists and counts, latency samples."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from flexpipe.errors import AmbiguousId, JobNotFound
from flexpipe.models import Job, Result
from flexpipe.schema import attempts, bulks, jobs, results
from flexpipe.states import JobStatus
from flexpipe.store.engine import Database
from flexpipe.store.rows import aware, to_job, to_result
from flexpipe.store.statements import GAVE_UP, GET_JOB, IN_FLIGHT_VALUES

#: The fewest characters of an id that are taken as a prefix of one (as in git).
MIN_PREFIX = 8
ID_LENGTH = 32
_PREFIX = re.compile(rf"[0-9a-f]{{{MIN_PREFIX},{ID_LENGTH - 1}}}")


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

    def resolve_job_id(self, given: str) -> str:
        """The full id of the one job whose id starts with ``given`` (at least
        :data:`MIN_PREFIX` characters); ``given`` itself when it is no such prefix.
        Raises :class:`AmbiguousId` when several jobs match."""
        return self._resolve(jobs, given, "job")

    def resolve_bulk_id(self, given: str) -> str:
        """Like :meth:`resolve_job_id`, for bulk jobs."""
        return self._resolve(bulks, given, "bulk job")

    def _resolve(self, table: sa.Table, given: str, what: str) -> str:
        prefix = given.strip().lower()
        if not _PREFIX.fullmatch(prefix):
            return given
        # A range on the primary key (its index), not LIKE, which PostgreSQL cannot index
        # outside the C collation; ids are lowercase hex of one length.
        query = (
            sa.select(table.c.id)
            .where(
                table.c.id >= prefix.ljust(ID_LENGTH, "0"),
                table.c.id <= prefix.ljust(ID_LENGTH, "f"),
            )
            .limit(101)
        )
        with self.engine.connect() as conn:
            found = [row[0] for row in conn.execute(query) if row[0].startswith(prefix)]
        if not found:
            return given
        if len(found) > 1:
            count = "more than 100" if len(found) > 100 else str(len(found))
            raise AmbiguousId(
                f"{what} id {given!r} is ambiguous: {count} {what}s start with it; "
                "type more of the id"
            )
        match: str = found[0]
        return match

    def short_ids(self, ids: Iterable[str]) -> dict[str, str]:
        """Each job id shortened to its shortest unique prefix, at least :data:`MIN_PREFIX`
        characters (from its neighbours in id order, two index reads each)."""
        shortened = {}
        with self.engine.connect() as conn:
            for job_id in ids:
                before = conn.execute(sa.select(sa.func.max(jobs.c.id)).where(jobs.c.id < job_id))
                after = conn.execute(sa.select(sa.func.min(jobs.c.id)).where(jobs.c.id > job_id))
                shared = max(_common(job_id, before.scalar()), _common(job_id, after.scalar()))
                shortened[job_id] = job_id[: max(MIN_PREFIX, shared + 1)]
        return shortened

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


def _common(a: str, b: str | None) -> int:
    """How many leading characters ``a`` and ``b`` share."""
    if b is None:
        return 0
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
