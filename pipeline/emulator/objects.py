"""Wire objects: Response objects per flavour, chat completions, SSE events, error bodies.

The openai flavour renders the full Response (every field the SDK marks non-optional, plus
the ones the OpenAPI ``Response`` schema requires); the doubleword flavour renders what
control-layer returns: the 202 minimal body on create, and on GET a reduced object with no
``metadata``/``instructions``/``text``, an integer ``error.code``, and truncation shown only
on the message item.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from flexpipe.emulator.records import Record

DW_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_credits",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    499: "client_disconnected",
}


def dumps(obj: Any) -> bytes:
    text: str = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    return text.encode()


def sub_object(body: dict[str, Any], key: str) -> dict[str, Any]:
    """``body[key]`` if it is an object, else ``{}``."""
    value = body.get(key)
    return value if isinstance(value, dict) else {}


def error_body(
    message: str, type_: str = "invalid_request_error", param: str | None = None, code: Any = None
) -> dict[str, Any]:
    """The ``{"error": {message, type, param, code}}`` envelope."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _item_id(rec: Record, flavor: str) -> str:
    h = hashlib.sha256(rec.id.encode()).hexdigest()
    return f"item_{h[:16]}" if flavor == "doubleword" else f"msg_{h[:48]}"


def message_item(rec: Record, flavor: str) -> dict[str, Any]:
    out = rec.output
    assert out is not None
    return {
        "type": "message",
        "id": _item_id(rec, flavor),
        "role": "assistant",
        "status": "incomplete" if out.truncated else "completed",
        "content": [{"type": "output_text", "text": out.text, "annotations": [], "logprobs": []}],
    }


def usage(rec: Record) -> dict[str, Any] | None:
    out = rec.output
    if out is None:
        return None
    return {
        "input_tokens": out.input_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": out.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": out.input_tokens + out.output_tokens,
    }


def openai_object(rec: Record, status: str | None = None, pending: bool = False) -> dict[str, Any]:
    """The full openai-flavour Response; ``pending`` renders the pre-output snapshot."""
    body = rec.body
    status = status or rec.status
    done = not pending and rec.terminal
    text = sub_object(body, "text")
    text_cfg = {"format": {"type": "text"}, "verbosity": "medium", **text}
    error = None
    if done and rec.error is not None:
        error = {"code": "server_error", "message": rec.error[1]}
    incomplete = None
    if done and status == "incomplete":
        incomplete = {"reason": "max_output_tokens"}
    reasoning = sub_object(body, "reasoning")
    obj: dict[str, Any] = {
        "id": rec.id,
        "object": "response",
        "created_at": int(rec.created_at),
        "status": status,
        "background": rec.background,
        "completed_at": int(rec.finished_at)
        if done and status == "completed" and rec.finished_at
        else None,
        "error": error,
        "incomplete_details": incomplete,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": body.get("max_tool_calls"),
        "model": rec.model,
        "output": [message_item(rec, "openai")] if done and rec.output is not None else [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "prompt_cache_key": body.get("prompt_cache_key"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "safety_identifier": body.get("safety_identifier"),
        "service_tier": rec.tier,
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": text_cfg,
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_logprobs": body.get("top_logprobs", 0),
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "usage": usage(rec) if done else None,
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }
    # The published schema types these as non-nullable: omit them rather than send null.
    for key in ("usage", "user"):
        if obj[key] is None:
            del obj[key]
    return obj


def dw_object(rec: Record) -> dict[str, Any]:
    """Doubleword's GET object (``store.rs::detail_to_response_object``)."""
    status = "completed" if rec.status == "incomplete" else rec.status
    obj: dict[str, Any] = {
        "id": rec.id,
        "object": "response",
        "created_at": int(rec.created_at),
        "status": status,
        "model": rec.model,
        "background": rec.background,
        "output": [message_item(rec, "doubleword")] if rec.output is not None else [],
        "service_tier": rec.tier,
    }
    if status == "completed":
        obj["usage"] = usage(rec)
        obj["completed_at"] = int(rec.finished_at or rec.created_at)
    if rec.error is not None:
        code = rec.error[0]
        obj["error"] = {
            "type": DW_ERROR_TYPES.get(code, "server_error"),
            "code": code,
            "message": rec.error[1],
        }
    return obj


def dw_create_body(rec: Record) -> dict[str, Any]:
    """Doubleword's 202 body on a background create (no ``created_at``/``usage``/``metadata``)."""
    if rec.lane == "realtime":
        return {
            "id": rec.id,
            "object": "response",
            "status": "in_progress",
            "model": rec.model,
            "background": True,
            "output": [],
        }
    return {
        "id": rec.id,
        "object": "response",
        "status": "queued",
        "model": rec.model,
        "background": True,
        "service_tier": rec.tier,
        "output": [],
    }


def response_object(rec: Record, flavor: str) -> dict[str, Any]:
    return openai_object(rec) if flavor == "openai" else dw_object(rec)


def get_body(rec: Record, flavor: str) -> bytes:
    """JSON bytes of the GET answer, cached once the record is terminal."""
    if rec.cached is not None:
        return rec.cached
    data = dumps(response_object(rec, flavor))
    if rec.terminal:
        rec.cached = data
    return data


def stream_events(rec: Record, flavor: str) -> list[dict[str, Any]]:
    """Every SSE event of ``rec`` (terminal) in order; ``sequence_number`` is the index.

    openai: created → in_progress → output_item.added → content_part.added → text deltas →
    output_text.done → content_part.done → output_item.done → completed|incomplete|failed.
    doubleword replays: created → output_item.added → one delta → output_text.done →
    output_item.done → completed (or created → failed).
    """
    first = "queued" if rec.background else "in_progress"
    if flavor == "openai":
        events: list[dict[str, Any]] = [
            {"type": "response.created", "response": openai_object(rec, first, pending=True)},
            {
                "type": "response.in_progress",
                "response": openai_object(rec, "in_progress", pending=True),
            },
        ]
    else:
        snap = {**dw_object(rec), "status": first, "output": []}
        snap.pop("usage", None), snap.pop("completed_at", None), snap.pop("error", None)
        events = [{"type": "response.created", "response": snap}]
    if not rec.terminal:  # live stream: only the events that precede the output
        for i, ev in enumerate(events):
            ev["sequence_number"] = i
        return events
    final = response_object(rec, flavor)
    if rec.output is not None:
        item = message_item(rec, flavor)
        iid, text = item["id"], rec.output.text
        ids = {"item_id": iid, "output_index": 0, "content_index": 0}
        events.append(
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": {**item, "status": "in_progress", "content": []},
            }
        )
        if flavor == "openai":
            events.append(
                {
                    "type": "response.content_part.added",
                    **ids,
                    "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []},
                }
            )
            for chunk in _chunks(text):
                events.append(
                    {"type": "response.output_text.delta", **ids, "delta": chunk, "logprobs": []}
                )
        else:
            events.append(
                {"type": "response.output_text.delta", **ids, "delta": text, "logprobs": []}
            )
        events.append({"type": "response.output_text.done", **ids, "text": text, "logprobs": []})
        if flavor == "openai":
            events.append({"type": "response.content_part.done", **ids, "part": item["content"][0]})
        events.append({"type": "response.output_item.done", "output_index": 0, "item": item})
    kind = {"completed": "response.completed", "incomplete": "response.incomplete"}.get(
        final["status"], "response.failed"
    )
    events.append({"type": kind, "response": final})
    for i, ev in enumerate(events):
        ev["sequence_number"] = i
    return events


def _chunks(text: str, n: int = 4) -> list[str]:
    if not text:
        return [""]
    size = max(1, -(-len(text) // n))
    return [text[i : i + size] for i in range(0, len(text), size)]


def sse(event: dict[str, Any]) -> bytes:
    name: str = event["type"]
    return b"event: " + name.encode() + b"\ndata: " + dumps(event) + b"\n\n"


def chat_completion(rec: Record) -> dict[str, Any]:
    out = rec.output
    assert out is not None
    return {
        "id": rec.id,
        "object": "chat.completion",
        "created": int(rec.created_at),
        "model": rec.model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": out.text,
                    "refusal": None,
                    "annotations": [],
                },
                "finish_reason": "length" if out.truncated else "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": out.input_tokens,
            "completion_tokens": out.output_tokens,
            "total_tokens": out.input_tokens + out.output_tokens,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
        "service_tier": rec.tier,
        "system_fingerprint": None,
    }
