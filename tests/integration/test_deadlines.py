"""Deadlines with a real worker: past it a job is expired (cancelled at the provider where
it can be), or, when it asked for it, escalated once to priority with both ids kept."""

from __future__ import annotations

import pytest

from flexpipe.emulator import EmulatorConfig, run_in_thread
from tests.integration.conftest import make_stack
from tests.integration.stack import TIME_SCALE, emulator_call

pytestmark = pytest.mark.integration


@pytest.fixture
def slow_flex(request, tmp_path_factory):
    """A stack whose provider takes 1500 s (15 s scaled) for flex, instant on priority."""
    config = EmulatorConfig(time_scale=TIME_SCALE, slots=0, seed=9,
                            latency={"flex": "fixed:1500", "realtime": "fixed:0"})
    with run_in_thread(config) as emulator:
        yield make_stack(request, tmp_path_factory, "services", emulator.url), emulator.url


def test_past_its_deadline_a_job_is_expired(slow_flex) -> None:
    from flexpipe.tasks import api

    stack, _ = slow_flex
    job_id = api.enqueue("A long report nobody needs after a second.", deadline=1.0)
    stack.wait_terminal([job_id], timeout=30)
    view = api.get(job_id)
    assert view.status.value == "expired"
    assert view.job.error_code == "deadline_exceeded"
    assert "deadline passed" in (view.job.error_message or "")
    assert view.result is not None and view.result.status.value == "expired"


def test_escalation_retries_once_on_priority_and_keeps_both_ids(slow_flex) -> None:
    from flexpipe.tasks import api

    stack, emulator_url = slow_flex
    # A priority job first: once it is done the worker is consuming, so the flex attempt
    # below is submitted well before its deadline.
    api.wait(api.enqueue("Warm-up.", service_tier="priority"), timeout=60)
    job_id = api.enqueue("An urgent note that must not wait an hour.", deadline=3.0,
                         escalate=True)
    view = api.wait(job_id, timeout=30)
    assert view.status.value == "completed", view.error
    assert view.result is not None and view.result.served_tier == "priority"
    history = stack.store.attempts(job_id)
    assert [(a["attempt"], a["service_tier"]) for a in history] == [(1, "flex"), (2, "priority")]
    assert history[0]["response_id"] and history[1]["response_id"]
    assert history[0]["response_id"] != history[1]["response_id"]
    assert "escalated to priority" in (history[0]["error_message"] or "")
    stats = emulator_call(emulator_url, "/_emulator/stats")["responses"]
    assert stats[history[1]["response_id"]]["tier"] == "priority"
