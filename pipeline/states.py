"""The job state machine: which statuses exist and which moves between them are allowed.

``pending → submitted → in_progress → completed | failed | cancelled | incomplete | expired``;
terminal statuses never change. Provider statuses are mapped onto these here and only here.
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    #: Written by enqueue; no provider request has been accepted yet.
    PENDING = "pending"
    #: The provider accepted the request and returned a response id; waiting in its queue.
    SUBMITTED = "submitted"
    #: The provider reports the request is being processed.
    IN_PROGRESS = "in_progress"
    #: Finished with output.
    COMPLETED = "completed"
    #: Finished without output; ``error_code`` and ``error_message`` say why.
    FAILED = "failed"
    #: Cancelled on request, at the provider where it supports cancel.
    CANCELLED = "cancelled"
    #: Finished with partial output (e.g. ``max_output_tokens`` reached).
    INCOMPLETE = "incomplete"
    #: The job's deadline passed before the provider finished it.
    EXPIRED = "expired"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL: frozenset[JobStatus] = frozenset(
    {
        JobStatus.COMPLETED,
        JobStatus.FAILED,
        JobStatus.CANCELLED,
        JobStatus.INCOMPLETE,
        JobStatus.EXPIRED,
    }
)

#: Statuses in which the provider holds the request and we poll it.
IN_FLIGHT: frozenset[JobStatus] = frozenset({JobStatus.SUBMITTED, JobStatus.IN_PROGRESS})

_ALLOWED: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.PENDING: frozenset({JobStatus.SUBMITTED, JobStatus.IN_PROGRESS} | TERMINAL),
    JobStatus.SUBMITTED: frozenset({JobStatus.IN_PROGRESS} | TERMINAL),
    JobStatus.IN_PROGRESS: TERMINAL,
}


def can_move(old: JobStatus, new: JobStatus) -> bool:
    """Return True when a job may move from ``old`` to ``new`` (staying put is allowed)."""
    if old == new:
        return True
    return new in _ALLOWED.get(old, frozenset())


_PROVIDER: dict[str, JobStatus] = {
    "queued": JobStatus.SUBMITTED,
    "in_progress": JobStatus.IN_PROGRESS,
    "completed": JobStatus.COMPLETED,
    "failed": JobStatus.FAILED,
    "cancelled": JobStatus.CANCELLED,
    "incomplete": JobStatus.INCOMPLETE,
}


def from_provider(status: str | None, *, truncated: bool = False) -> JobStatus:
    """Map a provider's response status onto a job status.

    ``truncated`` is True when an output message item says ``incomplete``: Doubleword
    reports a truncated answer as ``completed`` with an incomplete message item, OpenAI as
    ``incomplete`` with ``incomplete_details``; both become ``INCOMPLETE``. Unknown statuses
    count as failures rather than being polled forever.
    """
    job_status = _PROVIDER.get(status or "", JobStatus.FAILED)
    if job_status is JobStatus.COMPLETED and truncated:
        return JobStatus.INCOMPLETE
    return job_status
