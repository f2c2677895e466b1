"""Deterministic model outputs for a request: text, JSON object, or schema-valid JSON.

See :mod:`flexpipe.emulator.text` for the summary and the token estimate
(``ceil(chars / 4)``) and :mod:`flexpipe.emulator.structured` for ``json_schema`` outputs.
A text over ``max_output_tokens`` is cut to ``4 * max_output_tokens`` characters and marked
truncated.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flexpipe.emulator.structured import SchemaFaker
from flexpipe.emulator.text import (
    digest,
    estimate_tokens,
    keywords,
    main_text,
    messages_from_input,
    prompt_text,
    summarize,
)

__all__ = [
    "Output",
    "SchemaFaker",
    "digest",
    "estimate_tokens",
    "generate",
    "messages_from_input",
    "prompt_text",
    "summarize",
    "truncate",
]


@dataclass(frozen=True)
class Output:
    """What processing produced: the text, token counts and whether it was cut short."""

    text: str
    input_tokens: int
    output_tokens: int
    truncated: bool


def truncate(text: str, max_tokens: int | None) -> tuple[str, bool]:
    """Cut ``text`` to ``max_tokens`` by the estimate; report whether it was cut."""
    if max_tokens is None or estimate_tokens(text) <= max_tokens:
        return text, False
    return text[: max(0, max_tokens * 4)], True


def generate(
    messages: list[dict[str, str]],
    text_format: Mapping[str, Any] | None,
    max_output_tokens: int | None,
    seed: int,
) -> Output:
    """The local (non-upstream) output for a request."""
    kind = (text_format or {}).get("type", "text")
    if kind == "json_schema":
        schema = (text_format or {}).get("schema") or {}
        value = SchemaFaker(messages, seed, schema).value()
        full = json.dumps(value, ensure_ascii=False)
    elif kind == "json_object":
        main = main_text(messages)
        full = json.dumps(
            {"summary": summarize(messages, seed), "keywords": keywords(main, 5)},
            ensure_ascii=False,
        )
    else:
        full = summarize(messages, seed)
    text, cut = truncate(full, max_output_tokens)
    return Output(text, estimate_tokens(prompt_text(messages)), estimate_tokens(text), cut)


#: Request fields that are no output parameters (the input itself, ids, stream options).
REQUEST_ONLY_KEYS = (
    "input",
    "messages",
    "id",
    "response_id",
    "responseId",
    "completion_id",
    "completionId",
    "stream_options",
)


def chat_as_responses_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """Chat-completions parameters in Responses terms (for output generation)."""
    out: dict[str, Any] = {k: v for k, v in body.items() if k not in REQUEST_ONLY_KEYS}
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        out["max_output_tokens"] = max_tokens
    fmt = body.get("response_format")
    if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema":
        js = fmt.get("json_schema") or {}
        out["text"] = {
            "format": {
                "type": "json_schema",
                "name": js.get("name", "output"),
                "schema": js.get("schema") or {},
            }
        }
    elif isinstance(fmt, Mapping) and fmt.get("type") == "json_object":
        out["text"] = {"format": {"type": "json_object"}}
    return out
