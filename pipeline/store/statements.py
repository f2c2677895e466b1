"""The store's SQL building blocks: status guards and the statements every job runs.

Built once at import, with bind parameters: building a statement and its cache key per
call cost ~10% of a worker's CPU (BENCHMARKS.md, figure 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from flexpipe.schema import IN_FLIGHT_VALUES as IN_FLIGHT_VALUES
from flexpipe.schema import LIVE as LIVE
from flexpipe.schema import attempts, jobs, results
from flexpipe.states import TERMINAL, JobStatus

#: Terminal statuses, in a fixed order.
TERMINAL_VALUES = [s.value for s in JobStatus if s in TERMINAL]
#: Terminal statuses that mean nobody waits any more (not a provider outcome).
GAVE_UP = (JobStatus.EXPIRED.value, JobStatus.CANCELLED.value)


def one_of(column: sa.ColumnElement[str], values: Sequence[str]) -> sa.ColumnElement[bool]:
    """``column IN ('a', 'b')`` with the constants in the SQL text: the statement is cached
    whole, with no expanding bind to rewrite on every call (our own status names only)."""
    return column.in_([sa.literal_column(f"'{v}'") for v in values])


def present(column: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
    """True if a JSON column holds a value: Python None is stored as JSON ``null``."""
    return sa.and_(column.is_not(None), sa.cast(column, sa.Text) != "null")


# The status guards repeat the partial indexes' predicates (flexpipe.schema) as written.
LIVE_STATUS = one_of(jobs.c.status, LIVE)
IN_FLIGHT_STATUS = one_of(jobs.c.status, IN_FLIGHT_VALUES)
PENDING_STATUS = jobs.c.status == sa.literal_column("'pending'")
GET_JOB = sa.select(jobs).where(jobs.c.id == sa.bindparam("job_id"))

# and its cache key per call cost ~10% of a worker's CPU (BENCHMARKS.md, figure 1).
# Parameter names start with ``b_``: a name equal to a column's would join the SET clause.
_b = sa.bindparam
_CLAIM_VALUES: dict[str, Any] = {
    "lease_until": sa.case(
        (jobs.c.mode == "blocking", _b("b_blocking_until", type_=jobs.c.lease_until.type)),
        else_=_b("b_lease_until", type_=jobs.c.lease_until.type),
    ),
    "updated_at": _b("b_now"),
}
_LEASE_FREE = sa.or_(jobs.c.lease_until.is_(None), jobs.c.lease_until < _b("b_now"))
CLAIM_SUBMIT = (
    jobs.update()
    .where(jobs.c.id == _b("b_id"), jobs.c.status == JobStatus.PENDING.value, _LEASE_FREE)
    .values(_CLAIM_VALUES)
    .returning(*jobs.c)
)
#: The same for a chunk of jobs (``b_ids``): one statement instead of one per job.
CLAIM_SUBMITS = (
    jobs.update()
    .where(
        jobs.c.id.in_(_b("b_ids", expanding=True)),
        jobs.c.status == JobStatus.PENDING.value,
        _LEASE_FREE,
    )
    .values(_CLAIM_VALUES)
    .returning(*jobs.c)
)
RECORD_SUBMITTED = (
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
        (present(jobs.c.callback), _b("b_now", type_=jobs.c.callback_due_at.type)), else_=None
    ),
    "updated_at": _b("b_now"),
}
FINISH_JOB = (
    jobs.update()
    .where(jobs.c.id == _b("b_id"), LIVE_STATUS)
    .values(_FINISH_VALUES)
    .returning(jobs.c.submitted_at, jobs.c.attempt, jobs.c.bulk_id)
)
#: The same, counting the provider read that saw the outcome.
FINISH_POLLED_JOB = FINISH_JOB.values(poll_count=jobs.c.poll_count + 1)
FINISH_ATTEMPT = (
    attempts.update()
    .where(attempts.c.job_id == _b("b_id"), attempts.c.attempt == _b("b_attempt"))
    .values(
        status=_b("b_status"),
        error_code=_b("b_error_code"),
        error_message=_b("b_error_message"),
        finished_at=_b("b_now"),
    )
)


def upsert_result(dialect: str) -> sa.Insert | None:
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
