"""Request validation: every bad input names its field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from flexpipe.errors import ValidationError
from flexpipe.models import JobRequest, build_request, check_metadata, resolve_deadline

MODEL = "m"


def test_string_input() -> None:
    req = build_request("hello", model=MODEL)
    assert req.input == "hello"
    assert req.service_tier == "flex"
    assert req.mode == "background"
    assert JobRequest.from_json(req.to_json()) == req


def test_items_input() -> None:
    items = [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}]
    assert build_request(items, model=MODEL).input == items


def test_chat_messages_become_items_and_instructions() -> None:
    req = build_request(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Hello"}]},
            {"role": "assistant", "content": "Hi"},
            {"role": "user", "content": "Summarise."},
        ],
        model=MODEL,
        instructions="Use English.",
    )
    assert req.instructions == "Be brief.\n\nUse English."
    assert req.input == [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi"},
        {"role": "user", "content": "Summarise."},
    ]


@pytest.mark.parametrize(
    ("kwargs", "field", "words"),
    [
        ({"input": "x", "model": None}, "model", "required"),
        ({"input": "x", "model": "  "}, "model", "required"),
        ({"input": None, "model": MODEL}, "input", "required"),
        ({"input": "   ", "model": MODEL}, "input", "empty"),
        ({"input": [], "model": MODEL}, "input", "empty"),
        ({"input": [1], "model": MODEL}, "input", "object"),
        ({"input": 42, "model": MODEL}, "input", "string"),
        ({"input": "x" * 101, "model": MODEL, "max_input_chars": 100}, "input", "limit"),
        ({"input": [{"role": "user", "content": {1, 2}}], "model": MODEL}, "input", "JSON"),
        (
            {"input": "x", "messages": [{"role": "user", "content": "y"}], "model": MODEL},
            "input",
            "not both",
        ),
        ({"messages": [], "model": MODEL}, "messages", "non-empty"),
        ({"messages": [{"role": "robot", "content": "x"}], "model": MODEL}, "messages", "role"),
        ({"messages": [{"role": "system", "content": "x"}], "model": MODEL}, "messages", "user"),
        ({"input": "x", "model": MODEL, "service_tier": "turbo"}, "service_tier", "flex"),
        ({"input": "x", "model": MODEL, "mode": "sometimes"}, "mode", "background"),
        ({"input": "x", "model": MODEL, "max_output_tokens": 0}, "max_output_tokens", "positive"),
        (
            {"input": "x", "model": MODEL, "max_output_tokens": True},
            "max_output_tokens",
            "positive",
        ),
        ({"input": "x", "model": MODEL, "temperature": 3}, "temperature", "between"),
        ({"input": "x", "model": MODEL, "temperature": "hot"}, "temperature", "number"),
        ({"input": "x", "model": MODEL, "schema": "{}"}, "schema", "JSON Schema"),
        ({"input": "x", "model": MODEL, "schema": {"type": "nonsense"}}, "schema", "valid"),
        ({"input": "x", "model": MODEL, "schema": {"type": "array"}}, "schema", "root"),
        (
            {"input": "x", "model": MODEL, "schema": {"type": "object"}, "schema_name": "a b"},
            "schema_name",
            "letters",
        ),
        ({"input": "x", "model": MODEL, "metadata": {"k": 1}}, "metadata", "string"),
        ({"input": "x", "model": MODEL, "metadata": {"k" * 65: "v"}}, "metadata", "1-64"),
        ({"input": "x", "model": MODEL, "metadata": {"k": "v" * 513}}, "metadata", "512"),
        (
            {"input": "x", "model": MODEL, "metadata": {f"k{i}": "v" for i in range(16)}},
            "metadata",
            "15 keys",
        ),
        (
            {"input": "x", "model": MODEL, "metadata": {"flexpipe_job_id": "x"}},
            "metadata",
            "reserved",
        ),
        ({"input": "x", "model": MODEL, "metadata": ["a"]}, "metadata", "mapping"),
    ],
)
def test_bad_requests_name_the_field(kwargs, field, words) -> None:
    with pytest.raises(ValidationError) as info:
        build_request(**kwargs)
    assert info.value.field == field
    assert words in str(info.value)
    assert str(info.value).startswith(f"{field}: ")


def test_valid_schema_is_kept() -> None:
    schema = {
        "type": "object",
        "properties": {"label": {"type": "string", "enum": ["a", "b"]}},
        "required": ["label"],
        "additionalProperties": False,
    }
    req = build_request("x", model=MODEL, schema=schema, schema_name="label_v1")
    assert req.schema == schema
    assert req.schema_name == "label_v1"


def test_metadata_limits_accept_the_maximum() -> None:
    meta = {f"{i:02d}" + "k" * 62: "v" * 512 for i in range(15)}
    assert check_metadata(meta) == meta


def test_deadlines() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert resolve_deadline(None, now) is None
    assert resolve_deadline(60, now) == now + timedelta(seconds=60)
    assert resolve_deadline(timedelta(hours=1), now) == now + timedelta(hours=1)
    later = now + timedelta(days=1)
    assert resolve_deadline(later, now) == later
    for bad, words in [
        (-5, "future"),
        (now - timedelta(seconds=1), "past"),
        (datetime(2027, 1, 1), "timezone"),
        ("tomorrow", "datetime"),
        (True, "datetime"),
    ]:
        with pytest.raises(ValidationError, match=words) as info:
            resolve_deadline(bad, now)  # type: ignore[arg-type]
        assert info.value.field == "deadline"
