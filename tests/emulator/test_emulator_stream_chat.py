"""SSE streaming (create and GET replay) and chat completions, through the openai SDK."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import openai
import pytest

from flexpipe.emulator import EmulatorHandle
from tests.emulator.helpers import aclient, client, http, stats

DOC = "Photosynthesis turns light into chemical energy. Plants use chlorophyll to do it."


def test_openai_stream_create_and_replay(
    oa: EmulatorHandle, check_response: Callable[[Any], dict[str, Any]]
) -> None:
    c = client(oa)
    events = list(
        c.responses.create(model="m", input=DOC, service_tier="flex", background=True, stream=True)
    )
    types = [e.type for e in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].response.status == "queued"  # type: ignore[union-attr]
    final = events[-1].response  # type: ignore[union-attr]
    check_response(final)
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")  # type: ignore[union-attr]
    assert deltas == final.output_text and "Photosynthesis" in deltas
    rid = final.id
    replay = list(c.responses.retrieve(rid, stream=True, starting_after=3))
    assert [e.sequence_number for e in replay] == list(range(4, len(events)))
    assert [e.model_dump() for e in replay] == [e.model_dump() for e in events[4:]]
    assert c.responses.retrieve(rid).output_text == final.output_text


def test_openai_stream_truncated_ends_incomplete(oa: EmulatorHandle) -> None:
    c = client(oa)
    events = list(c.responses.create(model="m", input=DOC, stream=True, max_output_tokens=16))
    assert events[-1].type == "response.incomplete"


def test_doubleword_blocking_stream_replays_finished_object(dw: EmulatorHandle) -> None:
    c = client(dw)
    events = list(c.responses.create(model="m", input=DOC, service_tier="flex", stream=True))
    assert [e.type for e in events] == [
        "response.created",
        "response.output_item.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(6))
    assert events[2].delta == events[-1].response.output_text  # type: ignore[union-attr]
    status, headers, body = http(
        dw, "POST", "/v1/responses", {"model": "m", "input": "x", "stream": True}
    )
    assert status == 200
    assert headers["Content-Type"].startswith("text/event-stream")
    assert b"[DONE]" not in body
    first = body.split(b"\n\n")[0].split(b"\n")
    assert first[0] == b"event: response.created"
    assert json.loads(first[1][len(b"data: ") :])["type"] == "response.created"


def test_stream_of_failed_job(start: Callable[..., EmulatorHandle]) -> None:
    dw = start(faults={"fail_rate": 1.0})
    events = list(client(dw).responses.create(model="m", input="x", stream=True))
    assert [e.type for e in events] == ["response.created", "response.failed"]
    assert events[-1].response.error.code == 500  # type: ignore[union-attr]


def test_async_stream(oa: EmulatorHandle) -> None:
    async def main() -> list[str]:
        c = aclient(oa)
        stream = await c.responses.create(model="m", input=DOC, background=True, stream=True)
        types = [e.type async for e in stream]
        await c.close()
        return types

    types = asyncio.run(main())
    assert types[0] == "response.created" and types[-1] == "response.completed"


@pytest.mark.parametrize("flavor", ["openai", "doubleword"])
def test_chat_completions_realtime_and_flex(
    start: Callable[..., EmulatorHandle], flavor: str
) -> None:
    h = start(flavor=flavor)
    c = client(h)
    messages: list[Any] = [
        {"role": "system", "content": "You summarize."},
        {"role": "user", "content": DOC},
    ]
    rt = c.chat.completions.create(model="m", messages=messages)
    assert rt.object == "chat.completion"
    assert "Photosynthesis" in (rt.choices[0].message.content or "")
    assert rt.choices[0].finish_reason == "stop"
    assert rt.usage is not None and rt.usage.prompt_tokens == -(-len("You summarize.\n" + DOC) // 4)
    flex = c.chat.completions.create(model="m", messages=messages, service_tier="flex")
    assert flex.service_tier == "flex"
    assert flex.choices[0].message.content == rt.choices[0].message.content
    cut = c.chat.completions.create(model="m", messages=messages, max_tokens=3)
    assert cut.choices[0].finish_reason == "length"
    chunks = list(c.chat.completions.create(model="m", messages=messages, stream=True))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == rt.choices[0].message.content
    requests = stats(h)["requests"]["POST /v1/chat/completions"]
    assert requests["200"] == 4
    assert stats(h)["totals"]["chat_completions"] == 4


def test_chat_flex_hold_times_out(start: Callable[..., EmulatorHandle]) -> None:
    h = start(max_hold_s=0.1, latency={"flex": "fixed:5"})
    with pytest.raises(openai.InternalServerError) as err:
        client(h).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}], service_tier="flex"
        )
    assert err.value.status_code == 504


def test_chat_failed_job_carries_status(start: Callable[..., EmulatorHandle]) -> None:
    h = start(faults={"fail_rate": 1.0})
    with pytest.raises(openai.InternalServerError) as err:
        client(h).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 500
    assert err.value.code == "500"  # doubleword's integer code, as the SDK stringifies it


def test_chat_validation(dw: EmulatorHandle) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client(dw).chat.completions.create(model="m", messages=[])
    assert err.value.param == "messages"
