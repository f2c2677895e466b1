"""The CLI end to end: real subprocesses against a running stack; errors are one line
with exit code 2, and bad input writes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.stack import ROOT, Stack

pytestmark = pytest.mark.integration


def flexpipe(live: Stack, *args: str, env: dict[str, str] | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **live.env, "PYTHONPATH": str(ROOT), "COLUMNS": "200",
                **(env or {})}
    argv = [sys.executable, "-m", "flexpipe.cli", *args]
    return subprocess.run(argv, cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def _one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for word in words:
        assert word in lines[0], lines[0]


def test_submit_wait_status_result_and_list(live: Stack) -> None:
    done = flexpipe(live, "submit", "The library extends its weekend hours from May.",
                    "--instructions", "One sentence.", "--wait", "--timeout", "60")
    assert done.returncode == 0, done.stderr
    assert "library" in done.stdout.lower()
    job_id = flexpipe(live, "submit", "Second document about trams.").stdout.strip()
    assert len(job_id) == 32
    live.wait_terminal([job_id])
    status = flexpipe(live, "status", job_id)
    assert status.returncode == 0 and "completed" in status.stdout
    result = json.loads(flexpipe(live, "result", job_id, "--json").stdout)
    assert result["status"] == "completed" and "tram" in result["output_text"].lower()
    assert result["usage"]["total_tokens"] > 0
    listing = flexpipe(live, "list", "--limit", "5")
    assert listing.returncode == 0 and job_id[:8] in listing.stdout


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["submit", "   "], ["input", "empty"]),
        (["submit", "hi", "--model", " "], ["model"]),
        (["status", "no-such-job"], ["no job"]),
        (["result", "no-such-job"], ["no job"]),
        (["cancel", "no-such-job"], ["no job"]),
        (["list", "--status", "nonsense"], ["--status"]),
        (["retry"], ["JOB", "--status"]),
        (["retry", "no-such-job"], ["no job"]),
        (["bulk", "status", "no-such-bulk"], ["no bulk"]),
    ],
)
def test_errors_are_one_line_and_exit_2(live: Stack, args: list[str], words: list[str]) -> None:
    before = sum(live.store.status_counts().values())
    _one_line_error(flexpipe(live, *args), *words)
    assert sum(live.store.status_counts().values()) == before  # nothing written


def test_bad_schema_file(live: Stack, tmp_path: Path) -> None:
    bad = tmp_path / "schema.json"
    bad.write_text('{"type": "object", "properties": {"a": {"type": "nope"}}}')
    _one_line_error(flexpipe(live, "submit", "hi", "--schema", str(bad)), "schema")
    bad.write_text("{not json")
    _one_line_error(flexpipe(live, "submit", "hi", "--schema", str(bad)), "--schema")


def test_bad_settings_stop_the_cli_with_one_line(live: Stack) -> None:
    result = flexpipe(live, "list", env={"FLEXPIPE_PARK_AFTER": "1000000",
                                         "FLEXPIPE_TIME_SCALE": "1"})
    _one_line_error(result, "FLEXPIPE_PARK_AFTER", "FLEXPIPE_VISIBILITY_TIMEOUT")
    _one_line_error(flexpipe(live, "list", env={"FLEXPIPE_POLL_JITTER": "seven"}),
                    "FLEXPIPE_POLL_JITTER")


def test_retry_resubmits_a_failed_job_as_a_new_attempt(live: Stack) -> None:
    from flexpipe.tasks import api

    live.emulator("/_emulator/faults", {"fail_rate": 1.0})
    job_id = api.enqueue("A report that fails the first time.")
    live.wait_terminal([job_id])
    assert api.get(job_id).job.status.value == "failed"
    listing = flexpipe(live, "list", "--status", "failed", "--limit", "50")
    assert job_id[:8] in listing.stdout
    live.emulator("/_emulator/faults", {"fail_rate": 0.0})
    redo = flexpipe(live, "retry", job_id)
    assert redo.returncode == 0 and "attempt 2" in redo.stdout, redo.stderr
    view = api.wait(job_id, timeout=60)
    assert view.status.value == "completed"
    history = live.store.attempts(job_id)
    assert [a["attempt"] for a in history] == [1, 2]
    assert history[0]["status"] == "failed" and history[1]["status"] == "completed"


def test_a_task_with_an_unknown_job_id_logs_and_stops(live: Stack) -> None:
    from flexpipe.tasks.steps import poll, submit

    submit.apply_async(("0" * 32, 0))
    poll.apply_async(("1" * 32, 1, 0))
    end = time.monotonic() + 30
    while time.monotonic() < end:
        log = live.log_path.read_text(errors="replace")
        if "unknown job " + "0" * 32 in log and "unknown job " + "1" * 32 in log:
            break
        time.sleep(0.1)
    log = live.log_path.read_text(errors="replace")
    assert "submit: unknown job " + "0" * 32 in log
    assert "poll: unknown job " + "1" * 32 in log
    assert "Retry in" not in log.split("0" * 32, 1)[1][:2000]  # no retry loop


def test_bulk_wait_and_status(live: Stack) -> None:
    from flexpipe.tasks import api

    bulk_id = api.enqueue_many([f"Note {i} about the boiler service." for i in range(5)],
                               name="notes")
    waited = flexpipe(live, "bulk", "wait", bulk_id, "--timeout", "60")
    assert waited.returncode == 0, waited.stderr
    assert "5 completed, 0 failed" in waited.stdout
    status = flexpipe(live, "bulk", "status", bulk_id)
    assert status.returncode == 0 and "notes" in status.stdout


def test_list_prints_ids_that_fit_80_columns_and_can_be_typed_back(live: Stack) -> None:
    from flexpipe.tasks import api

    job_id = api.enqueue("A note on the harbour's new crane.")
    bulk_id = api.enqueue_many(["First item.", "Second item."], name="typed")
    live.wait_terminal([job_id])
    listing = flexpipe(live, "list", "--limit", "5", env={"COLUMNS": "80"})
    assert listing.returncode == 0, listing.stderr
    assert all(len(line) <= 80 for line in listing.stdout.splitlines()), listing.stdout
    assert job_id not in listing.stdout
    shown = [word for line in listing.stdout.splitlines() for word in line.split()
             if len(word) >= 8 and job_id.startswith(word)]
    assert shown, listing.stdout
    prefix = shown[0]
    assert 8 <= len(prefix) < 32
    status = flexpipe(live, "status", prefix)
    assert status.returncode == 0 and job_id in status.stdout, status.stderr
    result = json.loads(flexpipe(live, "result", prefix, "--json").stdout)
    assert result["job_id"] == job_id
    assert api.get(job_id[:10]).id == job_id
    waited = flexpipe(live, "bulk", "wait", bulk_id[:8], "--timeout", "60")
    assert waited.returncode == 0, waited.stderr
    assert flexpipe(live, "bulk", "status", bulk_id[:8]).returncode == 0
    rows = flexpipe(live, "bulk", "results", bulk_id[:8]).stdout.splitlines()
    assert len(rows) == 2
