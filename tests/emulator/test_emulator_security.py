"""Issue 11 S2: admin routes need a key, keys come from the environment, exposure is warned
about, and request size and retention are bounded."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import openai
import pytest

from flexpipe.emulator import EmulatorHandle
from tests.emulator.helpers import client, http, stats

REPO = Path(__file__).resolve().parents[2]

ADMIN_CALLS = (
    ("GET", "/_emulator/faults", None),
    ("POST", "/_emulator/faults", {"fail_rate": 1.0}),
    ("GET", "/_emulator/stats", None),
    ("POST", "/_emulator/reset", None),
    ("GET", "/_emulator/webhooks", None),
    ("POST", "/_emulator/webhooks", {"urls": ["http://127.0.0.1:1/x"], "secret": "s"}),
)


def _wait_done(c: openai.OpenAI, rid: str) -> str:
    for _ in range(400):
        status = c.responses.retrieve(rid).status
        if status not in ("queued", "in_progress"):
            return str(status)
        time.sleep(0.01)
    raise AssertionError(f"{rid} never finished")


@pytest.mark.parametrize("keys", [{"api_key": "K"}, {"api_key": "K", "admin_key": "A"}])
def test_unauthenticated_admin_calls_are_401_and_change_nothing(
    start: Callable[..., EmulatorHandle], keys: dict[str, str]
) -> None:
    h = start(flavor="openai", **keys)
    c = client(h, api_key="K")
    rid = c.responses.create(model="m", input="x", background=True).id
    for header in ({}, {"Authorization": "Bearer wrong"}):
        for method, path, body in ADMIN_CALLS:
            status, headers, raw = http(h, method, path, body, header)
            assert status == 401, (method, path)
            assert headers["Content-Type"].startswith("application/json")
            assert json.loads(raw)["error"]["type"] == "invalid_request_error"
    if "admin_key" in keys:  # the API key is not the admin key
        assert http(h, "POST", "/_emulator/reset", None, {"Authorization": "Bearer K"})[0] == 401
    # nothing changed: the response survived the resets, no fault, no webhook URL
    assert _wait_done(c, rid) == "completed"
    snap = stats(h)
    assert rid in snap["responses"] and snap["webhooks"]["urls"] == []
    assert h.emulator.faults.config.fail_rate == 0.0
    admin = {"Authorization": f"Bearer {keys.get('admin_key', 'K')}"}
    assert http(h, "POST", "/_emulator/reset", None, admin)[0] == 200
    assert rid not in stats(h)["responses"]


def test_admin_routes_are_open_without_keys(oa: EmulatorHandle) -> None:
    assert http(oa, "GET", "/_emulator/faults")[0] == 200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FLEXPIPE_")}
    return subprocess.Popen(
        [sys.executable, "-m", "flexpipe.emulator", *args],
        cwd=REPO,
        env={**base, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _get(url: str, key: str) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.terminate()
    _, err = proc.communicate(timeout=10)
    return err


def test_keys_come_from_the_environment() -> None:
    proc = _spawn(
        ["--port", "0", "--flavor", "openai", "--time-scale", "0.001"],
        {"FLEXPIPE_EMULATOR_API_KEY": "env-key", "FLEXPIPE_EMULATOR_ADMIN_KEY": "env-admin"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        base_url = line.split()[4]
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=base_url, api_key="x", max_retries=0).models.list()
        good = openai.OpenAI(base_url=base_url, api_key="env-key", max_retries=0)
        assert good.responses.create(model="m", input="hi").status == "completed"
        url = base_url.removesuffix("/v1") + "/_emulator/stats"
        status, body = _get(url, "env-admin")
        assert status == 200 and json.loads(body)["totals"]["creates"] == 1
        assert _get(url, "env-key")[0] == 401
    finally:
        err = _stop(proc)
    assert "env-key" not in err and "env-admin" not in err


def test_binding_beyond_loopback_without_a_key_prints_a_warning() -> None:
    port = _free_port()
    proc = _spawn(["--host", "0.0.0.0", "--port", str(port)], {})
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("flexpipe emulator listening on http://0.0.0.0:")
    finally:
        err = _stop(proc)
    assert "WARNING: the emulator listens on 0.0.0.0 with no API key" in err
    assert "FLEXPIPE_EMULATOR_API_KEY" in err


def test_no_warning_with_a_key_or_on_loopback() -> None:
    from flexpipe.emulator import EmulatorConfig
    from flexpipe.emulator.auth import exposure_warning

    assert exposure_warning(EmulatorConfig(), "127.0.0.1") is None
    assert exposure_warning(EmulatorConfig(), "::1") is None
    assert exposure_warning(EmulatorConfig(), "localhost") is None
    assert exposure_warning(EmulatorConfig(api_key="k"), "0.0.0.0") is None
    assert "/v1" in (exposure_warning(EmulatorConfig(admin_key="a"), "0.0.0.0") or "")


def test_an_oversize_body_is_413_in_the_error_envelope(
    start: Callable[..., EmulatorHandle],
) -> None:
    h = start(flavor="openai", max_body_bytes=2048)
    big = {"model": "m", "input": "x" * 4096}
    status, headers, raw = http(h, "POST", "/v1/responses", big)
    assert status == 413
    assert headers["Content-Type"].startswith("application/json")
    error = json.loads(raw)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "2048" in error["message"] and error["type"] == "invalid_request_error"
    with pytest.raises(openai.APIStatusError) as exc:
        client(h).responses.create(model="m", input="x" * 4096)
    assert exc.value.status_code == 413
    snap = stats(h)
    assert snap["totals"]["creates"] == 0 and snap["requests"]["POST /v1/responses"]["413"] == 2
    assert client(h).responses.create(model="m", input="small").status == "completed"


def test_retention_evicts_the_oldest_finished_responses(
    start: Callable[..., EmulatorHandle],
) -> None:
    slow_flex = {"flex": "fixed:600", "background": "fixed:600", "realtime": "fixed:0.01"}
    h = start(flavor="openai", max_retained=2, latency=slow_flex)
    c = client(h)
    ids = [c.responses.create(model="m", input=f"n{i}").id for i in range(4)]
    running = c.responses.create(
        model="m", input="slow", background=True, service_tier="flex"
    ).id  # still running: never evicted
    for rid in ids[:2]:
        with pytest.raises(openai.NotFoundError):
            c.responses.retrieve(rid)
    assert [c.responses.retrieve(rid).status for rid in ids[2:]] == ["completed"] * 2
    snap = stats(h)
    assert snap["totals"]["responses_evicted"] == 2
    assert set(snap["responses"]) == {*ids[2:], running}
