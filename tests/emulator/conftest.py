"""Fixtures for the emulator contract tests: real servers in threads, the Response schema."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from jsonschema import Draft202012Validator

from pipeline.emulator import EmulatorConfig, EmulatorHandle, run_in_thread

SCHEMA_PATH = Path(__file__).parent / "data" / "response_schema.json"

#: Latencies small enough for the whole suite to run in seconds (real seconds, time_scale=1).
FAST: dict[str, Any] = {
    "latency": {"flex": "fixed:0.05", "background": "fixed:0.05", "realtime": "fixed:0.01"},
    "queue_delay": {"flex": "fixed:0.02", "background": "fixed:0.02"},
}


def fast_config(**overrides: Any) -> EmulatorConfig:
    """A config with tiny fixed latencies; keyword arguments override any field."""
    kwargs: dict[str, Any] = {**FAST, **overrides}
    return EmulatorConfig(**kwargs)


@pytest.fixture(scope="session")
def response_validator() -> Draft202012Validator:
    """Validates a JSON object against ``components/schemas/Response`` (OpenAPI subset)."""
    doc = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return Draft202012Validator(doc)


@pytest.fixture
def check_response(response_validator: Draft202012Validator) -> Callable[[Any], dict[str, Any]]:
    """Validate an SDK ``Response`` (or dict) against the schema; returns the raw dict."""

    def check(obj: Any) -> dict[str, Any]:
        data: dict[str, Any] = (
            obj if isinstance(obj, dict) else obj.model_dump(mode="json", exclude_unset=True)
        )
        errors = sorted(response_validator.iter_errors(data), key=lambda e: list(e.path))
        assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:5])
        return data

    return check


@pytest.fixture
def start() -> Iterator[Callable[..., EmulatorHandle]]:
    """Factory: ``start(flavor="openai", slots=1, ...)`` → a running emulator (stopped after)."""
    handles: list[EmulatorHandle] = []

    def _start(config: EmulatorConfig | None = None, **overrides: Any) -> EmulatorHandle:
        handle = run_in_thread(config or fast_config(**overrides))
        handles.append(handle)
        return handle

    yield _start
    for handle in handles:
        handle.stop()


@pytest.fixture
def dw(start: Callable[..., EmulatorHandle]) -> EmulatorHandle:
    return start(flavor="doubleword")


@pytest.fixture
def oa(start: Callable[..., EmulatorHandle]) -> EmulatorHandle:
    return start(flavor="openai")


def client(handle: EmulatorHandle, **kwargs: Any) -> openai.OpenAI:
    kwargs.setdefault("api_key", "test-key")
    kwargs.setdefault("max_retries", 0)
    return openai.OpenAI(base_url=handle.base_url, **kwargs)


def aclient(handle: EmulatorHandle, **kwargs: Any) -> openai.AsyncOpenAI:
    kwargs.setdefault("api_key", "test-key")
    kwargs.setdefault("max_retries", 0)
    return openai.AsyncOpenAI(base_url=handle.base_url, **kwargs)


def http(
    handle: EmulatorHandle,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """A raw HTTP call (stdlib, not the SDK): ``(status, headers, body)``."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(handle.url + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers.items()), err.read()


def stats(handle: EmulatorHandle, responses: bool = True) -> dict[str, Any]:
    status, _, body = http(
        handle, "GET", "/_emulator/stats" + ("" if responses else "?responses=0")
    )
    assert status == 200
    result: dict[str, Any] = json.loads(body)
    return result


def set_faults(handle: EmulatorHandle, **faults: Any) -> dict[str, Any]:
    status, _, body = http(handle, "POST", "/_emulator/faults", faults)
    assert status == 200, body
    result: dict[str, Any] = json.loads(body)
    return result
