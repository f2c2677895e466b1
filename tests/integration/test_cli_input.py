"""The CLI against hostile input (issue 11): stored values print literally, arguments are
range-checked, a database that cannot be reached is one line and exit 2, and row files are
read as streams in bounded memory."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from flexpipe.states import JobStatus
from flexpipe.store import Outcome
from tests.integration.stack import ROOT, Stack
from tests.integration.test_cli import _one_line_error, flexpipe

pytestmark = pytest.mark.integration

#: Both close a tag that was never opened (rich's MarkupError) and open a link.
HOSTILE = "'x' is not one of ['[/x]', '[link=http://x]y[/link]', '[bold red]b']"


def _failed_job(live: Stack, message: str) -> str:
    """A job stored as failed with ``message``, as a worker would store it."""
    from flexpipe.tasks.api import prepare

    job_id, _ = live.store.add_job(prepare("A text whose answer broke the schema."))
    live.store.finish(job_id, Outcome(JobStatus.FAILED, error_code="invalid_output",
                                      error_message=message))
    return job_id


def test_stored_markup_prints_literally(live: Stack) -> None:
    job_id = _failed_job(live, HOSTILE)
    status = flexpipe(live, "status", job_id)
    assert status.returncode == 0, status.stderr
    assert HOSTILE in status.stdout
    listing = flexpipe(live, "list", "--status", "failed", "--limit", "1000")
    assert listing.returncode == 0, listing.stderr
    assert job_id[:8] in listing.stdout and "[/x]" in listing.stdout  # list prints prefixes
    assert "[link=http://x]y[/link]" in listing.stdout
    result = flexpipe(live, "result", job_id)
    # A failed job's result exits 1 (README); what matters is the literal line, no crash.
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == f"failed: invalid_output: {HOSTILE}"
    as_json = json.loads(flexpipe(live, "result", job_id, "--json").stdout)
    assert as_json["error"] == f"invalid_output: {HOSTILE}"


def _cli(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    """The CLI with no stack behind it (these checks do not depend on the backend)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("FLEXPIPE_")}
    env.update(PYTHONPATH=str(ROOT), COLUMNS="200", FLEXPIPE_DATABASE_URL=database_url,
               FLEXPIPE_API_KEY="test")
    return subprocess.run([sys.executable, "-m", "flexpipe.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("limit", ["-1", "0"])
def test_list_limit_is_range_checked(tmp_path: Path, limit: str) -> None:
    listing = _cli("list", "--limit", limit, database_url=f"sqlite:///{tmp_path / 'db'}")
    assert listing.returncode == 2
    assert "--limit" in listing.stderr and "Traceback" not in listing.stderr


@pytest.mark.parametrize("args", [["list"], ["status", "0" * 32], ["submit", "hello"]])
def test_an_unreachable_database_is_one_line_and_exit_2(args: list[str]) -> None:
    port = _closed_port()
    result = _cli(*args, database_url=f"postgresql+psycopg://fp:secret-pw@127.0.0.1:{port}/x")
    _one_line_error(result, "cannot reach", f"127.0.0.1:{port}")
    assert "secret-pw" not in result.stderr  # the password is masked


def test_classify_of_an_endless_line_fails_with_its_number(live: Stack) -> None:
    before = sum(live.store.status_counts().values())
    result = flexpipe(live, "classify", "/dev/zero", "--labels", "a,b",
                      "--max-line-bytes", "100000")
    _one_line_error(result, "/dev/zero line 1", "longer than 100,000 bytes")
    assert sum(live.store.status_counts().values()) == before  # nothing written


def test_a_bad_row_late_in_a_file_writes_nothing(live: Stack, tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    rows = [json.dumps({"text": f"row {n}"}) for n in range(2500)]
    rows[2300] = '{"text": ""}'
    path.write_text("\n".join(rows) + "\n")
    before = sum(live.store.status_counts().values())
    _one_line_error(flexpipe(live, "summarize", str(path), "--no-wait"), "line 2301")
    assert sum(live.store.status_counts().values()) == before
    rows[2300] = '{"text": "fixed"}'
    path.write_text("\n".join(rows) + "\n")
    done = flexpipe(live, "summarize", str(path), "--no-wait")
    assert done.returncode == 0, done.stderr
    bulk = live.store.get_bulk(done.stdout.strip())
    assert bulk is not None and bulk.total == 2500  # one bulk, written in chunks
