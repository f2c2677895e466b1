"""Flower on the real Redis: a worker, a Flower subprocess started exactly like
``flexpipe flower``, its basic auth, and what it shows of flexpipe tasks: names and job ids,
never a prompt, the provider's API key or the broker's password.

The first tests check the command itself (no services): it refuses to start without a
password and passes the credentials in the environment, never in ``argv``.
"""

from __future__ import annotations

import ast
import base64
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from click.testing import CliRunner

from tests.integration.conftest import make_stack
from tests.integration.stack import ROOT, Stack

API_KEY = "sk-flower-test-api-key-must-not-leak"
BROKER_PASSWORD = "flower-test-broker-password-must-not-leak"
FLOWER_USER = "ops"
FLOWER_PASSWORD = "flower-test-password"
DOC = (
    "The lighthouse keeper logged three ships on Friday night. "
    "Fog rolled in after midnight and the horn sounded until dawn."
)
#: How the tests start Flower: ``flexpipe flower`` on a free port (compose runs the same).
FLOWER_ARGS = ["flower", "--port", "0"]
STARTUP_TIMEOUT = 30.0
EVENT_TIMEOUT = 30.0

T = TypeVar("T")

# -- the command, without services -----------------------------------------------------------


@pytest.fixture
def flower_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[pytest.MonkeyPatch]:
    """Settings read afresh from the environment (and no .env file); ``os.execvpe`` may not
    replace pytest."""
    from flexpipe.config.settings import configure

    monkeypatch.chdir(tmp_path)

    def no_exec(*args: Any) -> None:
        raise AssertionError("flexpipe flower tried to start Flower")

    monkeypatch.setattr("flexpipe.cli.services.os.execvpe", no_exec)
    monkeypatch.delenv("FLEXPIPE_FLOWER_PASSWORD", raising=False)
    monkeypatch.delenv("FLEXPIPE_FLOWER_USER", raising=False)
    configure()
    yield monkeypatch
    configure()


def run_flower_command(
    monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> tuple[Any, list[tuple[str, list[str], dict[str, str]]]]:
    from flexpipe.cli import cli
    from flexpipe.config.settings import configure

    configure()  # read the environment the test set, as a new process would
    calls: list[tuple[str, list[str], dict[str, str]]] = []
    monkeypatch.setattr(
        "flexpipe.cli.services.os.execvpe", lambda file, argv, env: calls.append((file, argv, env))
    )
    result = CliRunner().invoke(cli, ["flower", *args])
    return result, calls


def test_flower_refuses_to_start_without_a_password(
    flower_settings: pytest.MonkeyPatch,
) -> None:
    result, calls = run_flower_command(flower_settings, [])
    assert result.exit_code == 2
    assert calls == []
    assert "FLEXPIPE_FLOWER_PASSWORD" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_flower_refuses_a_password_flower_would_split(
    flower_settings: pytest.MonkeyPatch,
) -> None:
    flower_settings.setenv("FLEXPIPE_FLOWER_PASSWORD", "one,two")
    result, calls = run_flower_command(flower_settings, [])
    assert result.exit_code == 2
    assert calls == []


def test_flower_passes_credentials_in_its_environment_not_its_arguments(
    flower_settings: pytest.MonkeyPatch,
) -> None:
    from flexpipe.cli.services import flower_command

    flower_settings.setenv("FLEXPIPE_FLOWER_USER", FLOWER_USER)
    flower_settings.setenv("FLEXPIPE_FLOWER_PASSWORD", FLOWER_PASSWORD)
    result, calls = run_flower_command(flower_settings, ["--port", "5600"])
    assert result.exit_code == 0, result.output
    [(file, argv, env)] = calls
    assert file == sys.executable
    assert argv == flower_command(port=5600, address="127.0.0.1")
    assert argv[1:6] == ["-m", "celery", "-A", "flexpipe.config.celery", "flower"]
    assert not any(FLOWER_PASSWORD in arg for arg in argv)
    assert env["FLOWER_BASIC_AUTH"] == f"{FLOWER_USER}:{FLOWER_PASSWORD}"


def test_flower_no_auth_drops_inherited_credentials(flower_settings: pytest.MonkeyPatch) -> None:
    flower_settings.setenv("FLOWER_BASIC_AUTH", "someone:else")
    result, calls = run_flower_command(flower_settings, ["--no-auth"])
    assert result.exit_code == 0, result.output
    [(_, _, env)] = calls
    assert "FLOWER_BASIC_AUTH" not in env


# -- a real Flower on the real Redis ---------------------------------------------------------


@dataclass
class Flower:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def get(self, path: str, *, password: str | None = FLOWER_PASSWORD) -> tuple[int, str]:
        """GET ``path``; the status and body, 4xx/5xx included."""
        request = urllib.request.Request(self.url + path)
        if password is not None:
            token = base64.b64encode(f"{FLOWER_USER}:{password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def get_json(self, path: str) -> Any:
        status, body = self.get(path)
        assert status == 200, f"{path}: {status} {body[:200]}\n{self.log_tail()}"
        assert_no_secrets(body)
        return json.loads(body)

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace")
        return "--- flower log tail:\n" + "\n".join(text.splitlines()[-lines:])


def assert_no_secrets(body: str) -> None:
    assert API_KEY not in body
    assert BROKER_PASSWORD not in body


@dataclass
class FlowerStack:
    stack: Stack
    #: The worker's node name prefix: every stack's worker is "celery@<host>" otherwise, and
    #: Flower merges the inspect replies of same-named workers on the broker into one.
    node: str


@pytest.fixture(scope="module")
def flower_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, emulator: str
) -> FlowerStack:
    """A worker on the real Redis, reached with a password (Redis's default user takes any)."""
    redis_url: str = request.getfixturevalue("redis_server")
    broker_url = redis_url.replace("redis://", f"redis://default:{BROKER_PASSWORD}@", 1) + "/0"
    extra_env = {
        "FLEXPIPE_BROKER_URL": broker_url,
        "FLEXPIPE_API_KEY": API_KEY,
        "FLEXPIPE_FLOWER_USER": FLOWER_USER,
        "FLEXPIPE_FLOWER_PASSWORD": FLOWER_PASSWORD,
    }
    node = f"flower-test-{uuid.uuid4().hex[:8]}"
    with pytest.MonkeyPatch.context() as patch:
        # `celery worker -n`, read from the environment by the worker that make_stack starts.
        patch.setenv("CELERY_WORKER_HOSTNAME", f"{node}@%h")
        stack = make_stack(request, tmp_path_factory, "services", emulator, extra_env)
    return FlowerStack(stack, node)


@pytest.fixture(scope="module")
def stack(flower_stack: FlowerStack) -> Stack:
    return flower_stack.stack


@pytest.fixture(scope="module")
def flower(stack: Stack) -> Iterator[Flower]:
    """``flexpipe flower --port 0`` as a subprocess; its URL is read from its log."""
    stack.activate()
    log_path = stack.data_dir / "flower.log"
    env = {**os.environ, **stack.env, "PYTHONPATH": str(ROOT)}
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "flexpipe.cli", *FLOWER_ARGS],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield Flower(process, wait_for_url(process, log_path), log_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for_url(process: subprocess.Popen[bytes], log_path: Path) -> str:
    end = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < end:
        found = re.search(r"Visit me at (http://[\d.]+:\d+)", log_path.read_text(errors="replace"))
        if found:
            return found.group(1)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"Flower did not start:\n{log_path.read_text(errors='replace')}")


def wait_for(flower: Flower, what: str, check: Callable[[], T | None]) -> T:
    """Call ``check()`` until it returns something truthy, or fail after EVENT_TIMEOUT."""
    end = time.monotonic() + EVENT_TIMEOUT
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"{what} after {EVENT_TIMEOUT}s\n{flower.log_tail()}")
        time.sleep(0.1)


@pytest.mark.integration
def test_healthcheck_answers_without_credentials(flower: Flower) -> None:
    assert flower.get("/healthcheck", password=None) == (200, "OK")


@pytest.mark.integration
def test_api_refuses_requests_without_the_right_credentials(flower: Flower) -> None:
    assert flower.get("/api/workers", password=None)[0] == 401
    assert flower.get("/api/workers", password="wrong")[0] == 401
    assert flower.get("/api/tasks", password=None)[0] == 401


@pytest.mark.integration
def test_password_is_not_in_the_process_arguments(flower: Flower) -> None:
    from flexpipe.cli.services import flower_command

    cmdline = Path(f"/proc/{flower.process.pid}/cmdline")
    if not cmdline.exists():
        pytest.skip("no /proc on this system")
    argv = cmdline.read_bytes().decode().split("\0")[:-1]
    assert argv[1:] == flower_command(port=0, address="127.0.0.1")[1:]
    assert not any(FLOWER_PASSWORD in arg for arg in argv)


def our_worker(node: str, workers: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The stack's worker among Flower's workers, once every inspect reply is in."""
    for name, info in workers.items():
        if name.startswith(f"{node}@") and {"active_queues", "conf", "registered"} <= set(info):
            return name, info
    return None


@pytest.mark.integration
def test_workers_are_listed_with_credentials_and_their_conf_hides_secrets(
    flower_stack: FlowerStack, flower: Flower
) -> None:
    name, info = wait_for(
        flower,
        "the stack's worker is not in /api/workers",
        lambda: our_worker(flower_stack.node, flower.get_json("/api/workers?refresh=1")),
    )
    queues = {queue["name"] for queue in info["active_queues"]}
    assert queues == {
        flower_stack.stack.env["FLEXPIPE_QUEUE"],
        flower_stack.stack.env["FLEXPIPE_POLL_QUEUE"],
    }
    assert {"flexpipe.submit", "flexpipe.poll", "flexpipe.sweep"} <= set(info["registered"])
    assert info["conf"]["broker_url"] == "redis://default:********@127.0.0.1:6379/0"
    assert "password" not in info["stats"]["broker"]
    # One worker in detail: its scheduled, reserved and active task lists too.
    detail = flower.get_json(f"/api/workers?refresh=1&workername={name}")
    assert name in detail


@pytest.mark.integration
def test_tasks_show_flexpipe_names_and_job_ids_only(
    flower_stack: FlowerStack, flower: Flower
) -> None:
    from flexpipe.tasks import api

    flower_stack.stack.activate()
    job_id = api.enqueue(
        DOC, instructions="Summarise in one sentence.", callback="tests.record_callback"
    )
    assert api.wait(job_id, timeout=60).status.value == "completed"

    def finished_tasks_of_job() -> dict[str, dict[str, Any]]:
        tasks = flower.get_json("/api/tasks")
        ours = {key: task for key, task in tasks.items() if job_id in (task["args"] or "")}
        names = {task["name"] for task in ours.values() if task["state"] == "SUCCESS"}
        wanted = {"flexpipe.submit", "flexpipe.poll", "tests.record_callback"}
        return ours if wanted <= names else {}

    missing = f"job {job_id}'s tasks are not all in /api/tasks"
    ours = wait_for(flower, missing, finished_tasks_of_job)
    for task in ours.values():
        # argsrepr names what each id means (flexpipe.tasks.messages), never the prompt.
        if task["name"] == "flexpipe.poll_many":
            # On a busy machine the sweeper may find a poll overdue and send it in a group.
            assert re.fullmatch(r"\d+ polls: job [0-9a-f]{32} poll \d+.*", task["args"]), task
        elif task["name"] == "flexpipe.submit":
            assert re.fullmatch(f"job {job_id} submit( after \\d+ failures)?", task["args"]), task
        elif task["name"] == "flexpipe.poll":
            assert re.fullmatch(f"job {job_id} poll \\d+( after \\d+ failures)?",
                                task["args"]), task
        else:
            assert task["name"] == "tests.record_callback", task
            assert ast.literal_eval(task["args"])[0] == job_id, task  # the app's own task
        assert ast.literal_eval(task["kwargs"]) == {}, task
        if task.get("worker"):
            assert task["worker"].startswith(f"{flower_stack.node}@"), task
    # The sweep runs every 0.5 s in this stack, but sends no task events: it is not listed.
    # (Flower sees every worker on this Redis, other test runs' too: ours only.)
    tasks = flower.get_json("/api/tasks")
    names = {
        task["name"]
        for task in tasks.values()
        if (task.get("worker") or "").startswith(f"{flower_stack.node}@")
    }
    assert names >= {"flexpipe.submit", "flexpipe.poll"}
    assert "flexpipe.sweep" not in names
    status, body = flower.get("/api/tasks")
    assert status == 200
    assert_no_secrets(body)
    assert "lighthouse" not in body and "Summarise" not in body
