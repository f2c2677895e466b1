"""What the store takes and gives back besides models: a new job, an outcome, a finish."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flexpipe.models import JobRequest, Usage
from flexpipe.states import JobStatus


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
