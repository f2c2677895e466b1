"""``flexpipe worker --beat`` as a user starts it: in a folder with no ``.flexpipe/``, and
never half alive (its beat dies, the worker exits non-zero)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.integration.stack import ROOT

pytestmark = pytest.mark.integration


def _env(tmp: Path, redis_server: str, **extra: str) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:8]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEXPIPE_")}
    env.update(
        PYTHONPATH=str(ROOT),
        FLEXPIPE_API_KEY="sk-test-not-a-real-key",
        FLEXPIPE_BROKER_URL=f"{redis_server}/0",
        FLEXPIPE_QUEUE=f"flexpipe-{suffix}",
        FLEXPIPE_POLL_QUEUE=f"flexpipe-{suffix}.poll",
        FLEXPIPE_SWEEP_INTERVAL="0.5",
        FLEXPIPE_BEAT_WATCH_INTERVAL="0.2",
        **extra,
    )
    return env


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def test_worker_beat_in_a_fresh_folder_makes_what_it_needs(
    tmp_path: Path, redis_server: str
) -> None:
    # The broker is Redis, so nothing else creates .flexpipe/ before the beat opens its file.
    env = _env(tmp_path, redis_server)
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flexpipe.cli", "worker", "--beat", "-c", "1"],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        end = time.monotonic() + 60
        while "Sending due task flexpipe-sweep" not in log_path.read_text(errors="replace"):
            assert proc.poll() is None, log_path.read_text(errors="replace")
            assert time.monotonic() < end, log_path.read_text(errors="replace")
            time.sleep(0.1)
        assert proc.poll() is None
        assert list((tmp_path / ".flexpipe").glob("beat-schedule*"))
    finally:
        _stop(proc)
    assert "FileNotFoundError" not in log_path.read_text(errors="replace")


def test_a_worker_whose_beat_dies_exits_non_zero(tmp_path: Path, redis_server: str) -> None:
    from flexpipe.cli.services import worker_command

    env = _env(tmp_path, redis_server, FLEXPIPE_DATA_DIR=str(tmp_path / "data"))
    argv = [*worker_command(beat=True, concurrency=1),
            "--scheduler", "tests.integration.broken_beat:DyingScheduler"]
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        code = proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        _stop(proc)
        raise AssertionError("the worker kept running after its beat died:\n"
                             + log_path.read_text(errors="replace")) from None
    log = log_path.read_text(errors="replace")
    assert code != 0, log
    assert "this beat dies on purpose" in log
    assert "the embedded beat died" in log


def test_embedded_defaults_need_no_db_upgrade(tmp_path: Path, emulator: str) -> None:
    """``flexpipe worker --beat`` then ``flexpipe submit --wait`` in a fresh folder, with no
    ``flexpipe db upgrade``: the SQLite database brings its own schema up to date."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEXPIPE_")}
    env.update(
        PYTHONPATH=str(ROOT),
        FLEXPIPE_API_KEY="sk-test-not-a-real-key",
        FLEXPIPE_API_BASE_URL=emulator + "/v1",
        FLEXPIPE_TIME_SCALE="0.01",
        FLEXPIPE_DEADLINE_FLEX="360000",
    )
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flexpipe.cli", "worker", "--beat", "-c", "1"],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        done = subprocess.run(
            [sys.executable, "-m", "flexpipe.cli", "submit", "The ferry timetable changes.",
             "--wait", "--timeout", "90"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
        )
        assert done.returncode == 0, (done.stderr, log_path.read_text(errors="replace"))
        assert "ferry" in done.stdout.lower()
        assert proc.poll() is None, log_path.read_text(errors="replace")
    finally:
        _stop(proc)
    assert "no such table" not in log_path.read_text(errors="replace")
