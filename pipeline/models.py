"""Request and record types: what an app asks for, and what flexpipe keeps about it.

:class:`JobRequest` is built by :func:`build_request`, which validates every field and
raises :class:`~flexpipe.errors.ValidationError` naming the first bad one; records read
back from SQL are small frozen dataclasses (:class:`Job`, :class:`Result`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from jsonschema import Draft202012Validator
from jsonschema import exceptions as jsonschema_exceptions

from flexpipe.errors import ValidationError
from flexpipe.states import JobStatus

Tier = Literal["flex", "priority"]
Mode = Literal["background", "blocking"]

TIERS: tuple[str, ...] = ("flex", "priority")
MODES: tuple[str, ...] = ("background", "blocking")
#: Metadata key flexpipe adds to every provider request (so the provider side can be audited).
JOB_ID_METADATA_KEY = "flexpipe_job_id"
_SCHEMA_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_CHAT_ROLES = frozenset({"system", "developer", "user", "assistant"})


@dataclass(frozen=True, slots=True)
class JobRequest:
    """A validated request: everything the provider call needs, JSON-serialisable."""

    model: str
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    schema: dict[str, Any] | None = None
    schema_name: str = "output"
    metadata: dict[str, str] = field(default_factory=dict)
    service_tier: str = "flex"
    mode: str = "background"

    def to_json(self) -> dict[str, Any]:
        """Return the request as a plain dict (stored in the jobs table)."""
        return {
            "model": self.model,
            "input": self.input,
            "instructions": self.instructions,
            "max_output_tokens": self.max_output_tokens,
            "temperature": self.temperature,
            "schema": self.schema,
            "schema_name": self.schema_name,
            "metadata": self.metadata,
            "service_tier": self.service_tier,
            "mode": self.mode,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JobRequest:
        return cls(
            model=data["model"],
            input=data["input"],
            instructions=data.get("instructions"),
            max_output_tokens=data.get("max_output_tokens"),
            temperature=data.get("temperature"),
            schema=data.get("schema"),
            schema_name=data.get("schema_name") or "output",
            metadata=dict(data.get("metadata") or {}),
            service_tier=data.get("service_tier") or "flex",
            mode=data.get("mode") or "background",
        )


def build_request(
    input: str | Sequence[Mapping[str, Any]] | None = None,
    *,
    messages: Sequence[Mapping[str, Any]] | None = None,
    model: str | None,
    instructions: str | None = None,
    max_output_tokens: int | None = None,
    temperature: float | None = None,
    schema: Mapping[str, Any] | None = None,
    schema_name: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    service_tier: str = "flex",
    mode: str = "background",
    max_input_chars: int = 400_000,
) -> JobRequest:
    """Validate an enqueue request and return it as a :class:`JobRequest`.

    ``input`` is a string or a list of Responses input items; ``messages`` is a Chat
    Completions message list (system messages become ``instructions``). Give one of them.
    Raises :class:`ValidationError` naming the field on the first problem found.
    """
    if not isinstance(model, str) or not model.strip():
        raise ValidationError("model", "a model name is required")
    if len(model) > 256:
        raise ValidationError("model", "longer than 256 characters")

    if instructions is not None and not isinstance(instructions, str):
        raise ValidationError("instructions", "must be a string")
    if input is not None and messages is not None:
        raise ValidationError("input", "give either input or messages, not both")
    if messages is not None:
        input, system = _from_chat_messages(messages)
        if system:
            instructions = system if instructions is None else f"{system}\n\n{instructions}"
    prepared = _check_input(input)
    size = _input_chars(prepared) + len(instructions or "")
    if size > max_input_chars:
        raise ValidationError("input", f"{size} characters is over the limit of {max_input_chars}")

    if max_output_tokens is not None and (
        isinstance(max_output_tokens, bool)
        or not isinstance(max_output_tokens, int)
        or max_output_tokens < 1
    ):
        raise ValidationError("max_output_tokens", "must be a positive integer")
    if temperature is not None:
        if isinstance(temperature, bool) or not isinstance(temperature, int | float):
            raise ValidationError("temperature", "must be a number")
        if not 0 <= temperature <= 2 or math.isnan(temperature):
            raise ValidationError("temperature", "must be between 0 and 2")
    if service_tier not in TIERS:
        raise ValidationError("service_tier", f"must be one of {', '.join(TIERS)}")
    if mode not in MODES:
        raise ValidationError("mode", f"must be one of {', '.join(MODES)}")

    checked_schema = _check_schema(schema)
    name = schema_name or "output"
    if not _SCHEMA_NAME.match(name):
        raise ValidationError("schema_name", "1-64 characters of letters, digits, _ and -")

    return JobRequest(
        model=model.strip(),
        input=prepared,
        instructions=instructions,
        max_output_tokens=max_output_tokens,
        temperature=None if temperature is None else float(temperature),
        schema=checked_schema,
        schema_name=name,
        metadata=check_metadata(metadata),
        service_tier=service_tier,
        mode=mode,
    )


def check_metadata(metadata: Mapping[str, Any] | None) -> dict[str, str]:
    """Check metadata against the provider's limits (16 keys, 64-char keys, 512-char values).

    One key is kept for flexpipe's own job id, so apps get 15.
    """
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise ValidationError("metadata", "must be a mapping of strings to strings")
    if len(metadata) > 15:
        raise ValidationError("metadata", "at most 15 keys (flexpipe uses the 16th)")
    out: dict[str, str] = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not key or len(key) > 64:
            raise ValidationError("metadata", f"key {key!r} must be a string of 1-64 characters")
        if key == JOB_ID_METADATA_KEY:
            raise ValidationError("metadata", f"key {key!r} is reserved for flexpipe")
        if not isinstance(value, str) or len(value) > 512:
            raise ValidationError(
                "metadata", f"value of {key!r} must be a string of at most 512 characters"
            )
        out[key] = value
    return out


def _check_input(value: object) -> str | list[dict[str, Any]]:
    if value is None:
        raise ValidationError("input", "input or messages is required")
    if isinstance(value, str):
        if not value.strip():
            raise ValidationError("input", "must not be empty")
        return value
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        if not value:
            raise ValidationError("input", "must not be an empty list")
        items: list[dict[str, Any]] = []
        for position, item in enumerate(value):
            if not isinstance(item, Mapping):
                raise ValidationError("input", f"item {position} must be an object")
            if "type" not in item and "role" not in item:
                raise ValidationError("input", f"item {position} needs a 'type' or a 'role'")
            items.append(_plain_json(dict(item), f"input[{position}]"))
        return items
    raise ValidationError("input", "must be a string or a list of input items")


def _from_chat_messages(
    messages: Sequence[Mapping[str, Any]],
) -> tuple[list[dict[str, Any]], str | None]:
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence) or not messages:
        raise ValidationError("messages", "must be a non-empty list of chat messages")
    items: list[dict[str, Any]] = []
    system: list[str] = []
    for position, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ValidationError("messages", f"message {position} must be an object")
        role = message.get("role")
        if role not in _CHAT_ROLES:
            raise ValidationError("messages", f"message {position} has unknown role {role!r}")
        content = message.get("content")
        text = _chat_text(content, position)
        if role in ("system", "developer") and not items:
            system.append(text)
        else:
            items.append({"role": role, "content": text})
    if not items:
        raise ValidationError("messages", "needs at least one user message")
    return items, ("\n\n".join(system) or None)


def _chat_text(content: object, position: int) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = []
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            else:
                raise ValidationError("messages", f"message {position} has a non-text part")
        return "".join(parts)
    raise ValidationError("messages", f"message {position} needs string content")


def _input_chars(value: str | list[dict[str, Any]]) -> int:
    if isinstance(value, str):
        return len(value)
    return len(json.dumps(value))


def _check_schema(schema: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if schema is None:
        return None
    if not isinstance(schema, Mapping):
        raise ValidationError("schema", "must be a JSON Schema object")
    plain = _plain_json(dict(schema), "schema")
    try:
        Draft202012Validator.check_schema(plain)
    except jsonschema_exceptions.SchemaError as exc:
        raise ValidationError("schema", f"not a valid JSON Schema: {exc.message}") from None
    if plain.get("type") != "object":
        raise ValidationError("schema", 'the root must be {"type": "object", ...}')
    return plain


def _plain_json(value: dict[str, Any], where: str) -> dict[str, Any]:
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationError(where.split("[")[0], f"not JSON-serialisable: {exc}") from None
    result: dict[str, Any] = json.loads(text)
    return result


def resolve_deadline(
    deadline: datetime | timedelta | float | None, now: datetime
) -> datetime | None:
    """Turn a deadline (an aware datetime, a timedelta, or seconds from now) into a datetime."""
    if deadline is None:
        return None
    if isinstance(deadline, bool):
        raise ValidationError("deadline", "must be a datetime, a timedelta or seconds")
    if isinstance(deadline, int | float):
        deadline = timedelta(seconds=deadline)
    if isinstance(deadline, timedelta):
        if deadline.total_seconds() <= 0:
            raise ValidationError("deadline", "must be in the future")
        return now + deadline
    if isinstance(deadline, datetime):
        if deadline.tzinfo is None:
            raise ValidationError("deadline", "must be timezone-aware")
        if deadline <= now:
            raise ValidationError("deadline", "is in the past")
        return deadline.astimezone(UTC)
    raise ValidationError("deadline", "must be a datetime, a timedelta or seconds")


@dataclass(frozen=True, slots=True)
class Job:
    """One row of the jobs table."""

    id: str
    status: JobStatus
    request: JobRequest
    idempotency_key: str | None
    callback: dict[str, Any] | None
    response_id: str | None
    attempt: int
    poll_count: int
    poll_seq: int
    created_at: datetime
    submitted_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    next_poll_at: datetime | None
    deadline_at: datetime | None
    error_code: str | None
    error_message: str | None
    bulk_id: str | None = None
    escalate: bool = False

    @property
    def terminal(self) -> bool:
        return self.status.terminal


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    total_tokens: int = 0


def output_text_of(items: Sequence[Any] | None) -> str | None:
    """The text of a response's output items: its messages' ``output_text`` parts, joined
    (what the SDK's ``response.output_text`` gives). None when there are no items at all."""
    if items is None:
        return None
    texts: list[str] = []
    for item in items:
        if not isinstance(item, dict) or item.get("type") != "message":
            continue
        for content in item.get("content") or []:
            if isinstance(content, dict) and content.get("type") == "output_text":
                texts.append(str(content.get("text") or ""))
    return "".join(texts)


def output_items_for(
    items: list[dict[str, Any]] | None, text: str | None
) -> list[dict[str, Any]] | None:
    """Output items that carry ``text`` (what the results table stores): ``items`` as they
    are when they do; else with one message item that holds the text added."""
    if not text or output_text_of(items) == text:
        return items
    message = {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }
    return [*(items or []), message]


@dataclass(frozen=True, slots=True)
class Result:
    """One row of the results table: what the provider returned for a finished job."""

    job_id: str
    status: JobStatus
    response_id: str | None
    output_text: str | None
    output: list[dict[str, Any]] | None
    parsed: Any
    usage: Usage
    served_tier: str | None
    error_code: str | None
    error_message: str | None
    incomplete_reason: str | None
    provider_created_at: datetime | None
    provider_completed_at: datetime | None
    stored_at: datetime


@dataclass(frozen=True, slots=True)
class JobView:
    """A job and, once it finished, its result: what ``get`` and ``wait`` return."""

    job: Job
    result: Result | None

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def status(self) -> JobStatus:
        return self.job.status

    @property
    def terminal(self) -> bool:
        return self.job.terminal

    @property
    def output_text(self) -> str | None:
        return None if self.result is None else self.result.output_text

    @property
    def parsed(self) -> Any:
        return None if self.result is None else self.result.parsed

    @property
    def error(self) -> str | None:
        if self.job.error_code is None:
            return None
        return f"{self.job.error_code}: {self.job.error_message or ''}".rstrip(": ")


@dataclass(frozen=True, slots=True)
class Bulk:
    """A bulk job's progress: counters kept in SQL, plus live pending/in-flight counts."""

    id: str
    name: str | None
    total: int
    done: int
    completed: int
    failed: int
    incomplete: int
    cancelled: int
    expired: int
    pending: int
    in_flight: int
    created_at: datetime
    finished_at: datetime | None

    @property
    def finished(self) -> bool:
        return self.finished_at is not None


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """One verified webhook delivery: its ``webhook-id`` (the same on every redelivery),
    the event's id and type, and the id it is about (``data.id``, a response id)."""

    webhook_id: str
    event_id: str
    type: str
    object_id: str
