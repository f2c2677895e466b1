"""Fault injection through the real SDK: retries, failures, read lag, read-once, drops."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import openai
import pytest

from flexpipe.emulator import EmulatorHandle
from tests.emulator.helpers import client, http, set_faults, stats

FAST_RETRY = {"retry_after_s": None, "retry_after_ms": 5}


def wait_done(c: openai.OpenAI, rid: str) -> Any:
    resp = c.responses.retrieve(rid)
    while resp.status in ("queued", "in_progress"):
        time.sleep(0.01)
        resp = c.responses.retrieve(rid)
    return resp


def test_create_429_is_retried_by_the_sdk_then_raised(dw: EmulatorHandle) -> None:
    set_faults(dw, create_429_rate=1.0, **FAST_RETRY)
    c = client(dw, max_retries=2)
    with pytest.raises(openai.RateLimitError) as err:
        c.responses.create(model="m", input="x", service_tier="flex", background=True)
    assert "Resource Unavailable" in err.value.message
    assert err.value.response.headers["retry-after-ms"] == "5"
    s = stats(dw)
    assert s["requests"]["POST /v1/responses"] == {"429": 3}
    assert s["totals"]["retries_seen"] == 2
    assert s["totals"]["creates"] == 0 and s["responses"] == {}


def test_retry_after_seconds_header(dw: EmulatorHandle) -> None:
    set_faults(dw, create_429_rate=1.0, retry_after_s=0.01)
    with pytest.raises(openai.RateLimitError) as err:
        client(dw).responses.create(model="m", input="x")
    assert err.value.response.headers["retry-after"] == "0.01"
    assert "retry-after-ms" not in err.value.response.headers


def test_partial_429_rate_recovers_within_sdk_retries(start: Callable[..., EmulatorHandle]) -> None:
    h = start(faults={"create_429_rate": 0.5, **FAST_RETRY}, seed=3)
    c = client(h, max_retries=6)
    ids = [
        c.responses.create(model="m", input=f"x{i}", service_tier="flex", background=True).id
        for i in range(10)
    ]
    s = stats(h)
    assert len(set(ids)) == 10 and s["totals"]["creates"] == 10
    assert s["requests"]["POST /v1/responses"]["202"] == 10
    rejected = s["requests"]["POST /v1/responses"].get("429", 0)
    assert rejected > 0 and s["totals"]["retries_seen"] == rejected


def test_faults_are_deterministic_given_the_seed(start: Callable[..., EmulatorHandle]) -> None:
    def outcomes(seed: int) -> list[int]:
        h = start(seed=seed, faults={"create_5xx_rate": 0.3, "drop_rate": 0.0})
        body = {"model": "m", "input": "x", "service_tier": "flex", "background": True}
        return [http(h, "POST", "/v1/responses", body)[0] for _ in range(40)]

    first, again, other = outcomes(1), outcomes(1), outcomes(2)
    assert first == again
    assert first != other
    assert set(first) > {202}


def test_unverified_cap_429_has_no_retry_after(dw: EmulatorHandle) -> None:
    set_faults(dw, create_429_no_retry_after_rate=1.0)
    with pytest.raises(openai.RateLimitError) as err:
        client(dw).responses.create(model="m", input="x", service_tier="flex", background=True)
    assert "Unverified accounts can submit at most" in err.value.message
    assert err.value.type == "invalid_request_error"
    headers = err.value.response.headers
    assert "retry-after" not in headers and "retry-after-ms" not in headers


def test_get_5xx_retried_and_statuses(dw: EmulatorHandle) -> None:
    c = client(dw, max_retries=2)
    resp = c.responses.create(model="m", input="x", service_tier="flex", background=True)
    set_faults(dw, get_5xx_rate=1.0, error_statuses=[502], **FAST_RETRY)
    with pytest.raises(openai.InternalServerError) as err:
        c.responses.retrieve(resp.id)
    assert err.value.status_code == 502
    assert stats(dw)["requests"]["GET /v1/responses/{id}"] == {"502": 3}
    set_faults(dw, get_5xx_rate=0.0, get_429_rate=1.0)
    with pytest.raises(openai.RateLimitError):
        c.responses.retrieve(resp.id)
    set_faults(dw, get_429_rate=0.0)
    assert wait_done(c, resp.id).status == "completed"
    assert stats(dw)["responses"][resp.id]["polls"] >= 1


def test_create_5xx_and_408_409_are_retried(dw: EmulatorHandle) -> None:
    set_faults(dw, create_5xx_rate=1.0, error_statuses=[408, 409, 500, 503], **FAST_RETRY)
    with pytest.raises(openai.APIStatusError):
        client(dw, max_retries=5).responses.create(model="m", input="x")
    codes = stats(dw)["requests"]["POST /v1/responses"]
    assert sum(codes.values()) == 6 and set(codes) <= {"408", "409", "500", "503"}


def test_x_should_retry_false_stops_sdk_retries(dw: EmulatorHandle) -> None:
    set_faults(dw, create_5xx_rate=1.0, should_retry=False, **FAST_RETRY)
    with pytest.raises(openai.InternalServerError) as err:
        client(dw, max_retries=3).responses.create(model="m", input="x")
    assert err.value.response.headers["x-should-retry"] == "false"
    assert stats(dw)["totals"]["retries_seen"] == 0


@pytest.mark.parametrize("flavor", ["doubleword", "openai"])
def test_fail_rate_ends_jobs_failed(
    start: Callable[..., EmulatorHandle],
    flavor: str,
    check_response: Callable[[Any], dict[str, Any]],
) -> None:
    h = start(flavor=flavor, faults={"fail_rate": 1.0})
    c = client(h)
    resp = c.responses.create(model="m", input="x", service_tier="flex", background=True)
    done = wait_done(c, resp.id)
    assert done.status == "failed" and done.output == [] and done.output_text == ""
    assert done.error is not None and "injected" in done.error.message
    if flavor == "doubleword":
        assert done.error.code == 500  # an integer, as Doubleword sends it
        assert done.error.type == "server_error"  # type: ignore[attr-defined]
        with pytest.raises(openai.InternalServerError):  # blocking: status from error.code
            c.responses.create(model="m", input="x", service_tier="flex")
    else:
        assert done.error.code == "server_error"
        check_response(done)
    assert stats(h)["totals"]["failed"] >= 1
    assert stats(h)["responses"][resp.id]["status"] == "failed"


def test_fail_rate_is_keyed_by_creation_index(start: Callable[..., EmulatorHandle]) -> None:
    def statuses(h: EmulatorHandle) -> list[str]:
        c = client(h)
        ids = [c.responses.create(model="m", input="x", background=True).id for _ in range(30)]
        return [wait_done(c, rid).status for rid in ids]

    a = statuses(start(seed=5, faults={"fail_rate": 0.4}))
    b = statuses(start(seed=5, faults={"fail_rate": 0.4}))
    assert a == b and {"failed", "completed"} == set(a)


def test_read_lag_answers_404_first(dw: EmulatorHandle) -> None:
    set_faults(dw, read_lag_ms=300)
    c = client(dw)
    resp = c.responses.create(model="m", input="x", service_tier="flex", background=True)
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(resp.id)
    time.sleep(0.35)
    assert wait_done(c, resp.id).status == "completed"
    s = stats(dw)
    assert s["requests"]["GET /v1/responses/{id}"]["404"] == 1
    assert s["responses"][resp.id]["polls"] == s["requests"]["GET /v1/responses/{id}"]["200"]


def test_read_once_gives_410_after_first_terminal_get(dw: EmulatorHandle) -> None:
    set_faults(dw, read_once=True)
    c = client(dw)
    resp = c.responses.create(model="m", input="x", service_tier="flex", background=True)
    done = wait_done(c, resp.id)
    assert done.status == "completed" and done.output_text
    with pytest.raises(openai.APIStatusError) as err:
        c.responses.retrieve(resp.id)
    assert err.value.status_code == 410
    assert isinstance(err.value.body, str)
    assert err.value.body.startswith("zdr_request_unavailable: ")
    assert err.value.response.headers["content-type"].startswith("text/plain")


def test_drops_raise_connection_errors(dw: EmulatorHandle) -> None:
    c = client(dw)
    resp = c.responses.create(model="m", input="x", service_tier="flex", background=True)
    set_faults(dw, drop_rate=1.0)
    with pytest.raises(openai.APIConnectionError):
        c.responses.create(model="m", input="x", service_tier="flex", background=True)
    with pytest.raises(openai.APIConnectionError):
        c.responses.retrieve(resp.id)
    with pytest.raises(openai.APIConnectionError):
        client(dw, max_retries=2).responses.retrieve(resp.id)
    set_faults(dw, drop_rate=0.0)
    s = stats(dw)
    assert s["totals"]["dropped"] == 5  # 1 create + 1 get + 3 attempts of a retrying get
    assert s["requests"]["GET /v1/responses/{id}"] == {"dropped": 4}
    assert s["totals"]["creates"] == 1
    assert wait_done(c, resp.id).status == "completed"


def test_slow_answers_trip_client_timeouts(dw: EmulatorHandle) -> None:
    set_faults(dw, slow_ms=1000)
    with pytest.raises(openai.APITimeoutError):
        client(dw, timeout=0.1).responses.create(model="m", input="x", background=True)
    set_faults(dw, slow_ms=0)
    assert client(dw, timeout=5).responses.create(model="m", input="x").status == "completed"


def test_fault_admin_endpoint(start: Callable[..., EmulatorHandle]) -> None:
    h = start(faults={"fail_rate": 0.25})
    status, _, body = http(h, "GET", "/_emulator/faults")
    current = json.loads(body)
    assert status == 200 and current["fail_rate"] == 0.25 and current["drop_rate"] == 0.0
    merged = set_faults(h, drop_rate=0.5, read_once="true")
    assert merged["fail_rate"] == 0.25 and merged["drop_rate"] == 0.5 and merged["read_once"]
    assert http(h, "POST", "/_emulator/faults", {"no_such_fault": 1})[0] == 400
    assert http(h, "POST", "/_emulator/faults", {"fail_rate": 2})[0] == 400
    assert stats(h)["requests"]["POST /_emulator/faults"] == {"200": 1, "400": 2}
