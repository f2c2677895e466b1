"""``POST /v1/chat/completions``: realtime, or flex held until the queue processes it.

Like Doubleword, ``service_tier="flex"`` on chat always blocks (there is no background chat);
the connection is held up to ``max_hold_s`` (scaled), then 504. ``stream: true`` is answered
with chat-completion chunks once the completion is ready, ending with ``data: [DONE]``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from flexpipe.emulator.objects import DW_ERROR_TYPES, chat_completion, dumps
from flexpipe.emulator.records import Record
from flexpipe.emulator.replies import Dropped, emulator, injected, json_error, json_response
from flexpipe.emulator.responses import _bad_request, hold_timeout, read_json, wait_terminal
from flexpipe.emulator.validation import InvalidRequest, validate_chat


async def chat_completions(request: web.Request) -> web.StreamResponse:
    emu = emulator(request)
    try:
        body = await read_json(request)
        fault = injected(emu, "create")
        if fault is not None:
            return fault
        validate_chat(emu.config, body)
    except InvalidRequest as exc:
        return _bad_request(exc)
    rec = emu.create_chat(body)
    if not await wait_terminal(emu, rec):
        return hold_timeout(emu)
    if not rec.terminal:
        raise Dropped()
    if rec.status in ("failed", "cancelled"):
        code, message = rec.error or (499, "Request was canceled")
        status = code if code >= 400 else 500
        if rec.status == "cancelled":
            return json_error(499, message, "request_canceled", code=499)
        code_value: Any = status if emu.config.flavor == "doubleword" else None
        return json_error(
            status, message, DW_ERROR_TYPES.get(status, "server_error"), code=code_value
        )
    obj = chat_completion(rec)
    if body.get("stream"):
        return await _stream(request, rec, obj)
    return json_response(obj)


async def _stream(request: web.Request, rec: Record, obj: dict[str, Any]) -> web.StreamResponse:
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await resp.prepare(request)
    base = {
        "id": obj["id"],
        "object": "chat.completion.chunk",
        "created": obj["created"],
        "model": obj["model"],
        "service_tier": obj["service_tier"],
        "system_fingerprint": None,
    }
    choice = obj["choices"][0]
    chunks = [
        {
            "index": 0,
            "delta": {"role": "assistant", "content": ""},
            "finish_reason": None,
            "logprobs": None,
        },
        {
            "index": 0,
            "delta": {"content": choice["message"]["content"]},
            "finish_reason": None,
            "logprobs": None,
        },
        {"index": 0, "delta": {}, "finish_reason": choice["finish_reason"], "logprobs": None},
    ]
    for c in chunks:
        await resp.write(b"data: " + dumps({**base, "choices": [c]}) + b"\n\n")
    await resp.write(b"data: " + dumps({**base, "choices": [], "usage": obj["usage"]}) + b"\n\n")
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp
