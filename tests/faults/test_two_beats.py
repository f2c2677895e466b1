"""Two beats at once, one SIGKILLed midway: one sweeper's work, whatever the deployment
(issue 15 §3).

Running two beat processes (two replicas of a beat container) is a classic mistake: every
sweep is sent twice, a few milliseconds apart. Every sweeper claim is a guarded update
(``flexpipe.store.sweeps``), so the second sweep finds nothing left to take, and each
due callback is sent once.

The issue asks for two beats and four workers for 10 minutes. Scaled down for CI: the
stack's worker (embedded beat, 2 pool processes) plus a second worker (2 pool processes,
so four in all) and a standalone ``flexpipe beat``, both beats sweeping every 0.2 s (one
sweep pair per 0.2 s, ~100 pairs in the ~40 s that 300 jobs with slow polls take here,
about what 10 minutes of the default 5 s interval sends); the standalone beat is
SIGKILLed once half the jobs are done, and the run goes on with one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.faults.conftest import JOBS, assert_nothing_lost_nothing_twice, enqueue_jobs, wait_until
from tests.integration.stack import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

ENV = {
    "FLEXPIPE_SWEEP_INTERVAL": "0.2",
    # Polls slow enough that the run lasts, and that sweeps (overdue polls, due
    # callbacks) have work to race for. Callbacks are overdue after the stack's 3 s: one
    # whose publish is slower than that is sent again by design (same task id), which
    # the run-once check would count against the beats.
    "FLEXPIPE_POLL_FIRST_DELAY": "20",
    "FLEXPIPE_POLL_MAX_DELAY": "50",
    "FLEXPIPE_POLL_OVERDUE_AFTER": "2",
}


def _spawn(argv: list[str], env: dict[str, str], log_path) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        os.killpg(process.pid, sig)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def test_two_beats_one_killed_midway_send_each_callback_once(scenario, tmp_path) -> None:
    from flexpipe.cli.services import worker_command

    sc = scenario(env=ENV)
    stack = sc.stack
    base = {**os.environ, **stack.env, "PYTHONPATH": str(ROOT)}
    # A second beat is a second container: its own schedule file, the same stack.
    beat_env = {**base, "FLEXPIPE_DATA_DIR": str(tmp_path / "beat2")}
    flexpipe = os.path.join(os.path.dirname(sys.executable), "flexpipe")
    beat = _spawn([flexpipe, "beat"], beat_env, tmp_path / "beat2.log")
    worker = _spawn(worker_command(concurrency=2), base, tmp_path / "worker2.log")
    try:
        ids = enqueue_jobs()
        wait_until(lambda: sum(
            n for s, n in stack.store.status_counts(ids).items() if s == "completed"
        ) >= JOBS // 2, 240, "half the jobs", stack)
        assert beat.poll() is None, (tmp_path / "beat2.log").read_text()
        _stop(beat, signal.SIGKILL)
        assert beat.returncode == -signal.SIGKILL
        # One message per job; each ran once (no worker was killed).
        assert_nothing_lost_nothing_twice(sc, ids)
        assert "Sending due task" in (tmp_path / "beat2.log").read_text()
    finally:
        _stop(beat, signal.SIGKILL)
        _stop(worker)
