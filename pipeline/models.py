"""Request and record types: what an app asks for, and what flexpipe keeps about it.

:class:`JobRequest` is built by :func:`build_request`, which validates every field and
raises :class:`~flexpipe.errors.ValidationError` naming the first bad one; records read
back from SQL are small frozen dataclasses (:class:`Job`, :class:`Result`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypedDict

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
#: Lone UTF-16 surrogates: Python strings may hold them, UTF-8 (HTTP, SQL) cannot.
_SURROGATE = re.compile("[\ud800-\udfff]")
#: Keywords that make a JSON Schema refer to another document.
_REF_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")
#: How deeply input items, schemas, metadata and callback arguments may nest.
MAX_NESTING = 32
#: The largest ``max_output_tokens`` accepted (no model writes more in one response).
MAX_OUTPUT_TOKENS = 1_000_000
#: The furthest deadline accepted, in seconds from now (30 days).
MAX_DEADLINE = 30 * 86_400.0


class EnqueueArgs(TypedDict, total=False):
    """The keyword arguments of a request beside ``input``, shared by ``enqueue``,
    ``prepare``, ``enqueue_many`` (as defaults and per item) and the by-name
    ``flexpipe.enqueue`` task.

    ``messages`` are Chat Completions messages (instead of ``input``); ``callback`` a task
    name or a Celery signature; ``deadline`` a datetime, a timedelta or seconds from now;
    ``None`` for a setting means the settings' default.
    """

    messages: Sequence[Mapping[str, Any]] | None
    model: str | None
    instructions: str | None
    max_output_tokens: int | None
    temperature: float | None
    schema: Mapping[str, Any] | None
    schema_name: str | None
    metadata: Mapping[str, Any] | None
    idempotency_key: str | None
    callback: str | Mapping[str, Any] | None
    deadline: datetime | timedelta | float | None
    service_tier: str | None
    mode: str
    escalate: bool


#: The names a request may use; anything else is a :class:`ValidationError`.
REQUEST_FIELDS: frozenset[str] = frozenset(EnqueueArgs.__annotations__) | {"input"}


def check_fields(names: Iterable[object], where: str = "") -> None:
    """Raise :class:`ValidationError` naming the first argument that is not a request field."""
    for name in names:
        if name not in REQUEST_FIELDS:
            shown = name if isinstance(name, str) else repr(name)
            raise ValidationError(f"{where}{shown}", "unknown argument")


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
    max_output_tokens_limit: int = MAX_OUTPUT_TOKENS,
    max_nesting: int = MAX_NESTING,
) -> JobRequest:
    """Validate an enqueue request and return it as a :class:`JobRequest`.

    ``input`` is a string or a list of Responses input items; ``messages`` is a Chat
    Completions message list (system messages become ``instructions``). Give one of them.
    Every string must be valid Unicode without NUL characters, and nested values may nest
    at most ``max_nesting`` deep. Raises :class:`ValidationError` naming the field on the
    first problem found; it never raises anything else, whatever it is given.
    """
    if model is None:
        raise ValidationError("model", "a model name is required")
    check_text(model, "model", required=True)
    assert isinstance(model, str)
    if not model.strip():
        raise ValidationError("model", "a model name is required")
    if len(model) > 256:
        raise ValidationError("model", "longer than 256 characters")

    check_text(instructions, "instructions")
    if input is not None and messages is not None:
        raise ValidationError("input", "give either input or messages, not both")
    if messages is not None:
        check_json(messages, "messages", max_nesting)
        input, system = _from_chat_messages(messages)
        if system:
            instructions = system if instructions is None else f"{system}\n\n{instructions}"
    else:
        check_json(input, "input", max_nesting)
    prepared = _check_input(input)
    size = _input_chars(prepared) + len(instructions or "")
    if size > max_input_chars:
        raise ValidationError("input", f"{size} characters is over the limit of {max_input_chars}")

    if max_output_tokens is not None and (
        isinstance(max_output_tokens, bool)
        or not isinstance(max_output_tokens, int)
        or not 1 <= max_output_tokens <= max_output_tokens_limit
    ):
        raise ValidationError(
            "max_output_tokens", f"must be a positive integer of at most {max_output_tokens_limit}"
        )
    if temperature is not None:
        if isinstance(temperature, bool) or not isinstance(temperature, int | float):
            raise ValidationError("temperature", "must be a number")
        if not 0 <= temperature <= 2 or math.isnan(temperature):
            raise ValidationError("temperature", "must be between 0 and 2")
    if not isinstance(service_tier, str) or service_tier not in TIERS:
        raise ValidationError("service_tier", f"must be one of {', '.join(TIERS)}")
    if not isinstance(mode, str) or mode not in MODES:
        raise ValidationError("mode", f"must be one of {', '.join(MODES)}")

    checked_schema = _check_schema(schema, max_nesting)
    name = "output" if schema_name is None else schema_name
    if not isinstance(name, str) or not _SCHEMA_NAME.match(name):
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


def check_text(value: object, field: str, *, required: bool = False) -> None:
    """Raise :class:`ValidationError` unless ``value`` is a string (or None when not
    ``required``) that UTF-8 and SQL can carry: no NUL, no lone surrogate."""
    if value is None and not required:
        return
    if not isinstance(value, str):
        raise ValidationError(field, "must be a string")
    problem = _text_problem(value)
    if problem:
        raise ValidationError(field, problem)


def _text_problem(value: str) -> str | None:
    if "\x00" in value:
        return f"contains a NUL character (at {value.index(chr(0))})"
    found = _SURROGATE.search(value)
    if found:
        return f"contains a lone surrogate (at {found.start()}): not valid Unicode text"
    return None


def check_json(value: object, field: str, max_nesting: int = MAX_NESTING) -> None:
    """Walk a JSON-like value without recursion: raise :class:`ValidationError` for nesting
    deeper than ``max_nesting``, a bad string (key or value), a non-finite number or a
    value JSON cannot hold. Containers are dicts (string keys), lists and tuples."""
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            problem = _text_problem(item)
            if problem:
                raise ValidationError(field, problem)
        elif isinstance(item, bool) or item is None or isinstance(item, int):
            continue
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise ValidationError(field, f"{item!r} is not a JSON number")
        elif isinstance(item, Mapping | list | tuple):
            if depth >= max_nesting:
                raise ValidationError(field, f"nested deeper than {max_nesting} levels")
            if isinstance(item, Mapping):
                for key in item:
                    if not isinstance(key, str):
                        raise ValidationError(field, f"key {key!r} is not a string")
                    stack.append((key, depth + 1))
                children: Iterable[object] = item.values()
            else:
                children = item
            stack.extend((child, depth + 1) for child in children)
        else:
            raise ValidationError(field, f"{type(item).__name__} is not JSON-serialisable")

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
        check_text(key, "metadata")
        if key == JOB_ID_METADATA_KEY:
            raise ValidationError("metadata", f"key {key!r} is reserved for flexpipe")
        if not isinstance(value, str) or len(value) > 512:
            raise ValidationError(
                "metadata", f"value of {key!r} must be a string of at most 512 characters"
            )
        check_text(value, "metadata")
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
        if not isinstance(role, str) or role not in _CHAT_ROLES:
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


def _check_schema(schema: Mapping[str, Any] | None, max_nesting: int) -> dict[str, Any] | None:
    if schema is None:
        return None
    if not isinstance(schema, Mapping):
        raise ValidationError("schema", "must be a JSON Schema object")
    check_json(schema, "schema", max_nesting)
    plain = _plain_json(dict(schema), "schema")
    _check_local_refs(plain)
    try:
        Draft202012Validator.check_schema(plain)
    except jsonschema_exceptions.SchemaError as exc:
        raise ValidationError("schema", f"not a valid JSON Schema: {exc.message}") from None
    if plain.get("type") != "object":
        raise ValidationError("schema", 'the root must be {"type": "object", ...}')
    return plain


def _check_local_refs(schema: dict[str, Any]) -> None:
    """Only references inside the schema itself (``#...``): a schema never makes flexpipe
    fetch a document, from the network or anywhere else."""
    stack: list[Any] = [schema]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for keyword in _REF_KEYWORDS:
                ref = item.get(keyword)
                if keyword in item and not (isinstance(ref, str) and ref.startswith("#")):
                    raise ValidationError(
                        "schema",
                        f"{keyword} {ref!r} is not a local reference: only '#...' references "
                        "are allowed (remote schemas are never fetched)",
                    )
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _plain_json(value: dict[str, Any], where: str) -> dict[str, Any]:
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationError(where.split("[")[0], f"not JSON-serialisable: {exc}") from None
    result: dict[str, Any] = json.loads(text)
    return result


def resolve_deadline(
    deadline: datetime | timedelta | float | None,
    now: datetime,
    max_seconds: float = MAX_DEADLINE,
) -> datetime | None:
    """Turn a deadline (an aware datetime, a timedelta, or seconds from now) into a datetime.

    It must lie in the future and at most ``max_seconds`` from ``now``.
    """
    if deadline is None:
        return None
    if isinstance(deadline, bool):
        raise ValidationError("deadline", "must be a datetime, a timedelta or seconds")
    too_far = f"is more than {max_seconds:g} seconds away"
    if isinstance(deadline, int | float):
        try:
            seconds = float(deadline)
        except OverflowError:
            raise ValidationError("deadline", too_far) from None
        if math.isnan(seconds):
            raise ValidationError("deadline", "must be a number of seconds, not NaN")
        if seconds > max_seconds:
            raise ValidationError("deadline", too_far)
        if seconds <= 0:
            raise ValidationError("deadline", "must be in the future")
        deadline = timedelta(seconds=seconds)
    if isinstance(deadline, timedelta):
        if deadline.total_seconds() <= 0:
            raise ValidationError("deadline", "must be in the future")
        if deadline.total_seconds() > max_seconds:
            raise ValidationError("deadline", too_far)
        return now + deadline
    if isinstance(deadline, datetime):
        if deadline.tzinfo is None or deadline.utcoffset() is None:
            raise ValidationError("deadline", "must be timezone-aware")
        try:
            ahead = (deadline - now).total_seconds()
            resolved = deadline.astimezone(UTC)
        except (OverflowError, ValueError):
            raise ValidationError("deadline", "is out of range") from None
        if ahead <= 0:
            raise ValidationError("deadline", "is in the past")
        if ahead > max_seconds:
            raise ValidationError("deadline", too_far)
        return resolved
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
