"""Upstream mode: process a job by one realtime ``POST /chat/completions`` to another server.

The Responses request becomes chat messages (``instructions`` → a system message),
``max_output_tokens`` → ``max_tokens``, ``text.format`` json_schema/json_object →
``response_format``; the reply becomes the job's output (``finish_reason == "length"`` →
truncated). A non-2xx answer or a connection error fails the job with the upstream's message.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from flexpipe.emulator.config import EmulatorConfig
from flexpipe.emulator.objects import sub_object
from flexpipe.emulator.outputs import Output, estimate_tokens, prompt_text
from flexpipe.emulator.queue import ProcessingError
from flexpipe.emulator.records import Record


def chat_request(rec: Record, model: str | None = None) -> dict[str, Any]:
    """The chat-completions body that processes ``rec``."""
    body = rec.body
    req: dict[str, Any] = {"model": model or rec.model, "messages": rec.messages}
    max_tokens = body.get("max_output_tokens")
    if max_tokens is not None:
        req["max_tokens"] = max_tokens
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            req[key] = body[key]
    fmt = sub_object(sub_object(body, "text"), "format")
    if fmt.get("type") == "json_schema":
        schema: dict[str, Any] = {"name": fmt.get("name", "output"), "schema": fmt.get("schema")}
        if "strict" in fmt:
            schema["strict"] = fmt["strict"]
        req["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif fmt.get("type") == "json_object":
        req["response_format"] = {"type": "json_object"}
    return req


def _error_message(data: Any, fallback: str) -> str:
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        msg = data["error"].get("message")
        if isinstance(msg, str) and msg:
            return msg
    return fallback


class Upstream:
    """A chat-completions client for one upstream base URL (``.../v1``)."""

    def __init__(self, config: EmulatorConfig) -> None:
        assert config.upstream_url
        self.url = config.upstream_url + "/chat/completions"
        self.model = config.upstream_model
        self.timeout = aiohttp.ClientTimeout(total=config.upstream_timeout_s)
        self.headers = {"Content-Type": "application/json"}
        if config.upstream_api_key:
            self.headers["Authorization"] = f"Bearer {config.upstream_api_key}"
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def process(self, rec: Record) -> Output:
        """Run ``rec`` upstream; raise :class:`ProcessingError` on any upstream failure."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        try:
            async with self._session.post(
                self.url, json=chat_request(rec, self.model), headers=self.headers
            ) as resp:
                text = await resp.text()
                try:
                    data: Any = await resp.json(content_type=None)
                except ValueError:
                    data = None
                if resp.status >= 400:
                    raise ProcessingError(
                        _error_message(data, text or f"upstream answered {resp.status}"),
                        resp.status,
                    )
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ProcessingError(f"upstream unreachable: {exc!r}", 502) from exc
        try:
            choice = data["choices"][0]
            content = choice["message"].get("content") or ""
            finish = choice.get("finish_reason")
        except (KeyError, IndexError, TypeError) as exc:
            raise ProcessingError("upstream returned a malformed chat completion", 502) from exc
        use = data.get("usage") or {}
        in_tok = use.get("prompt_tokens") or estimate_tokens(prompt_text(rec.messages))
        out_tok = use.get("completion_tokens") or estimate_tokens(content)
        return Output(content, int(in_tok), int(out_tok), finish == "length")
