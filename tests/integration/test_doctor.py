"""``flexpipe doctor`` against a real running stack (all checks pass), then the same stack
with its worker stopped (it says which check failed, in plain words, and exits 1)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.integration.conftest import make_stack
from tests.integration.stack import ROOT, Stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["services", "services-rabbitmq"])
def running(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, emulator: str
) -> Stack:
    return make_stack(request, tmp_path_factory, request.param, emulator)


def _doctor(stack: Stack) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **stack.env, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "flexpipe.cli", "doctor"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def _lines(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    found = {}
    for line in result.stdout.splitlines():
        mark, _, rest = line.partition("  ")
        check, _, detail = rest.strip().partition(": ")
        found[check] = f"{mark.strip()} {detail}"
    return found


CHECKS = {"broker", "database", "schema", "beat", "workers", "callbacks"}


def test_doctor_passes_on_a_running_stack(running: Stack) -> None:
    from flexpipe.cli.doctor import diagnose

    running.activate()
    end = time.monotonic() + 60
    while not all(f.ok for f in diagnose()):  # the worker and its beat are still starting
        assert time.monotonic() < end, [f.line() for f in diagnose()] + [running.log_tail()]
        time.sleep(0.5)
    result = _doctor(running)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = _lines(result)
    assert set(lines) == CHECKS, result.stdout
    assert all(value.startswith("ok ") for value in lines.values()), result.stdout
    assert "the sweeper ran" in lines["beat"]


def test_doctor_says_which_check_fails_without_a_worker(running: Stack) -> None:
    running.stop_worker()
    result = _doctor(running)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = _lines(result)
    assert set(lines) == CHECKS, result.stdout
    for check in ("broker", "database", "schema"):
        assert lines[check].startswith("ok "), result.stdout
    assert lines["workers"].startswith("FAIL no worker consumes"), result.stdout
    assert running.env["FLEXPIPE_QUEUE"] in lines["workers"]
    assert lines["callbacks"].startswith("FAIL no worker consumes the callback queue")
