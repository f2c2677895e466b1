"""Helpers for the emulator tests: configs, SDK clients, raw HTTP, stats and faults."""

from __future__ import annotations

import functools
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import httpx2
import openai
from jsonschema import Draft202012Validator

from flexpipe.emulator import EmulatorConfig, EmulatorHandle

SCHEMA_PATH = Path(__file__).parent / "data" / "response_schema.json"

#: Schema violations seen by the clients' response hooks; the autouse fixture in conftest.py
#: fails the test that produced any.
VIOLATIONS: list[str] = []


@functools.cache
def response_validator() -> Draft202012Validator:
    """Validates against ``components/schemas/Response`` (the subset in data/, loaded once)."""
    return Draft202012Validator(json.loads(SCHEMA_PATH.read_text(encoding="utf-8")))


def schema_errors(data: Any) -> list[str]:
    errors = sorted(response_validator().iter_errors(data), key=lambda e: list(e.path))
    return [f"{list(e.path)}: {e.message}" for e in errors]


def _record(response: httpx2.Response) -> None:
    if not response.headers.get("content-type", "").startswith("application/json"):
        return
    data = json.loads(response.content) if response.content else None
    if isinstance(data, dict) and data.get("object") == "response" and "deleted" not in data:
        VIOLATIONS.extend(f"{response.request.url}: {e}" for e in schema_errors(data))


def _check_hook(response: httpx2.Response) -> None:
    response.read()
    _record(response)


async def _acheck_hook(response: httpx2.Response) -> None:
    await response.aread()
    _record(response)


#: Latencies small enough for the whole suite to run in seconds (real seconds, time_scale=1).
FAST: dict[str, Any] = {
    "latency": {"flex": "fixed:0.05", "background": "fixed:0.05", "realtime": "fixed:0.01"},
    "queue_delay": {"flex": "fixed:0.02", "background": "fixed:0.02"},
}


def fast_config(**overrides: Any) -> EmulatorConfig:
    """A config with tiny fixed latencies; keyword arguments override any field."""
    kwargs: dict[str, Any] = {**FAST, **overrides}
    return EmulatorConfig(**kwargs)


def client(handle: EmulatorHandle, **kwargs: Any) -> openai.OpenAI:
    """A sync SDK client; in the openai flavour every JSON Response it receives is validated."""
    kwargs.setdefault("api_key", "test-key")
    kwargs.setdefault("max_retries", 0)
    if handle.config.flavor == "openai":
        kwargs.setdefault(
            "http_client", openai.DefaultHttpx2Client(event_hooks={"response": [_check_hook]})
        )
    return openai.OpenAI(base_url=handle.base_url, **kwargs)


def aclient(handle: EmulatorHandle, **kwargs: Any) -> openai.AsyncOpenAI:
    """The async twin of :func:`client`."""
    kwargs.setdefault("api_key", "test-key")
    kwargs.setdefault("max_retries", 0)
    if handle.config.flavor == "openai":
        kwargs.setdefault(
            "http_client",
            openai.DefaultAsyncHttpx2Client(event_hooks={"response": [_acheck_hook]}),
        )
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


def admin_headers(handle: EmulatorHandle) -> dict[str, str]:
    """The ``Authorization`` header the handle's admin routes need (none when they are open)."""
    key = handle.config.admin_key or handle.config.api_key
    return {"Authorization": f"Bearer {key}"} if key else {}


def stats(handle: EmulatorHandle, responses: bool = True) -> dict[str, Any]:
    status, _, body = http(
        handle,
        "GET",
        "/_emulator/stats" + ("" if responses else "?responses=0"),
        headers=admin_headers(handle),
    )
    assert status == 200
    result: dict[str, Any] = json.loads(body)
    return result


def set_faults(handle: EmulatorHandle, **faults: Any) -> dict[str, Any]:
    status, _, body = http(handle, "POST", "/_emulator/faults", faults, admin_headers(handle))
    assert status == 200, body
    result: dict[str, Any] = json.loads(body)
    return result
