"""Helpers for the emulator tests: configs, SDK clients, raw HTTP, stats and faults."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import openai

from pipeline.emulator import EmulatorConfig, EmulatorHandle

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
