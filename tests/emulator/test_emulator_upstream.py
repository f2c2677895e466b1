"""Upstream mode: a flex queue in front of a realtime chat-completions server (a 2nd emulator)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from typing import Any

import jsonschema
import openai

from flexpipe.emulator import EmulatorHandle
from tests.emulator.helpers import client, stats

DOC = "Volcanoes form where magma reaches the surface. Iceland has many active volcanoes."
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"topic": {"type": "string"}, "score": {"type": "integer", "maximum": 5}},
    "required": ["topic", "score"],
    "additionalProperties": False,
}


def wait_done(c: openai.OpenAI, rid: str) -> Any:
    resp = c.responses.retrieve(rid)
    while resp.status in ("queued", "in_progress"):
        time.sleep(0.01)
        resp = c.responses.retrieve(rid)
    return resp


def test_upstream_processes_jobs_via_chat_completions(
    start: Callable[..., EmulatorHandle], check_response: Callable[[Any], dict[str, Any]]
) -> None:
    upstream = start(flavor="openai", api_key="up-key", seed=9)
    front = start(
        flavor="openai", upstream_url=upstream.base_url, upstream_api_key="up-key", slots=2
    )
    c = client(front)
    ids = [
        c.responses.create(
            model="m", input=DOC, instructions="Be short.", service_tier="flex", background=True
        ).id
        for _ in range(3)
    ]
    done = [wait_done(c, rid) for rid in ids]
    direct = client(upstream, api_key="up-key").chat.completions.create(
        model="m",
        messages=[{"role": "system", "content": "Be short."}, {"role": "user", "content": DOC}],
    )
    for resp in done:
        check_response(resp)
        assert resp.status == "completed" and resp.service_tier == "flex"
        assert resp.output_text == direct.choices[0].message.content
        assert resp.usage is not None and direct.usage is not None
        assert resp.usage.input_tokens == direct.usage.prompt_tokens
    up = stats(upstream)
    assert up["requests"]["POST /v1/chat/completions"] == {"200": 4}
    assert up["totals"]["chat_completions"] == 4


def test_upstream_maps_truncation_and_json_schema(start: Callable[..., EmulatorHandle]) -> None:
    upstream = start(flavor="openai")
    front = start(flavor="doubleword", upstream_url=upstream.base_url)
    c = client(front)
    cut = c.responses.create(model="m", input=DOC, service_tier="flex", max_output_tokens=4)
    assert cut.status == "completed" and cut.output[0].status == "incomplete"
    structured = c.responses.create(
        model="m",
        input=DOC,
        service_tier="flex",
        text={"format": {"type": "json_schema", "name": "rating", "schema": SCHEMA}},
    )
    jsonschema.validate(json.loads(structured.output_text), SCHEMA)
    oa_front = start(flavor="openai", upstream_url=upstream.base_url)
    long_doc = " ".join(f"Volcano number {i} erupted in year {1900 + i}." for i in range(20))
    cut2 = client(oa_front).responses.create(model="m", input=long_doc, max_output_tokens=16)
    assert cut2.status == "incomplete"
    assert cut2.incomplete_details is not None
    assert cut2.incomplete_details.reason == "max_output_tokens"


def test_upstream_errors_fail_the_job_with_its_message(
    start: Callable[..., EmulatorHandle],
) -> None:
    upstream = start(flavor="doubleword", api_key="right")
    front = start(flavor="doubleword", upstream_url=upstream.base_url, upstream_api_key="wrong")
    c = client(front)
    resp = wait_done(c, c.responses.create(model="m", input="x", background=True).id)
    assert resp.status == "failed"
    assert resp.error is not None
    assert resp.error.message == "Invalid API key" and resp.error.code == 401
    assert resp.error.type == "authentication_error"  # type: ignore[attr-defined]

    failing = start(flavor="openai", faults={"fail_rate": 1.0})
    front2 = start(flavor="openai", upstream_url=failing.base_url)
    resp2 = wait_done(
        client(front2), client(front2).responses.create(model="m", input="x", background=True).id
    )
    assert resp2.status == "failed" and resp2.error is not None
    assert "injected" in resp2.error.message


def test_unreachable_upstream(start: Callable[..., EmulatorHandle]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    front = start(flavor="openai", upstream_url=f"http://127.0.0.1:{port}/v1")
    c = client(front)
    resp = wait_done(c, c.responses.create(model="m", input="x", background=True).id)
    assert resp.status == "failed" and resp.error is not None
    assert "upstream unreachable" in resp.error.message
