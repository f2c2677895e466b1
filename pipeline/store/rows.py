"""Rows read from the tables, as the core's frozen dataclasses."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.engine import RowMapping

from flexpipe.models import Bulk, Job, JobRequest, Result, Usage, output_text_of
from flexpipe.states import JobStatus


def aware(value: datetime | None) -> datetime:
    assert value is not None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def maybe_aware(value: datetime | None) -> datetime | None:
    return None if value is None else aware(value)


def to_job(row: RowMapping) -> Job:
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
        created_at=aware(row["created_at"]),
        submitted_at=maybe_aware(row["submitted_at"]),
        started_at=maybe_aware(row["started_at"]),
        finished_at=maybe_aware(row["finished_at"]),
        next_poll_at=maybe_aware(row["next_poll_at"]),
        deadline_at=maybe_aware(row["deadline_at"]),
        error_code=row["error_code"],
        error_message=row["error_message"],
        bulk_id=row["bulk_id"],
        escalate=bool(row["escalate"]),
    )


def to_result(row: RowMapping) -> Result:
    return Result(
        job_id=row["job_id"],
        status=JobStatus(row["status"]),
        response_id=row["response_id"],
        output_text=output_text_of(row["output"]),
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
        provider_created_at=maybe_aware(row["provider_created_at"]),
        provider_completed_at=maybe_aware(row["provider_completed_at"]),
        stored_at=aware(row["stored_at"]),
    )


def to_bulk(row: RowMapping) -> Bulk:
    """A bulk's row, with its live ``pending`` and ``in_flight`` counts alongside."""
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
        created_at=aware(row["created_at"]),
        finished_at=maybe_aware(row["finished_at"]),
    )
