"""The job state machine and the provider status mapping."""

from __future__ import annotations

import pytest

from flexpipe.states import IN_FLIGHT, TERMINAL, JobStatus, can_move, from_provider


def test_terminal_states_never_change() -> None:
    for old in TERMINAL:
        for new in JobStatus:
            assert can_move(old, new) == (old == new)


def test_forward_moves() -> None:
    assert can_move(JobStatus.PENDING, JobStatus.SUBMITTED)
    assert can_move(JobStatus.SUBMITTED, JobStatus.IN_PROGRESS)
    assert can_move(JobStatus.IN_PROGRESS, JobStatus.COMPLETED)
    assert can_move(JobStatus.PENDING, JobStatus.FAILED)
    assert not can_move(JobStatus.IN_PROGRESS, JobStatus.SUBMITTED)
    assert not can_move(JobStatus.SUBMITTED, JobStatus.PENDING)


@pytest.mark.parametrize(
    ("provider", "truncated", "expected"),
    [
        ("queued", False, JobStatus.SUBMITTED),
        ("in_progress", False, JobStatus.IN_PROGRESS),
        ("completed", False, JobStatus.COMPLETED),
        ("completed", True, JobStatus.INCOMPLETE),  # Doubleword's truncation
        ("incomplete", False, JobStatus.INCOMPLETE),  # OpenAI's truncation
        ("failed", False, JobStatus.FAILED),
        ("cancelled", False, JobStatus.CANCELLED),
        ("requires_action", False, JobStatus.FAILED),
        (None, False, JobStatus.FAILED),
    ],
)
def test_provider_statuses(provider, truncated, expected) -> None:
    assert from_provider(provider, truncated=truncated) is expected


def test_sets() -> None:
    assert IN_FLIGHT.isdisjoint(TERMINAL)
    assert all(s.terminal for s in TERMINAL)
    assert not JobStatus.PENDING.terminal
