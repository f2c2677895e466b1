"""Deterministic outputs: summaries, schema-valid JSON, the token estimate, latency models."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import jsonschema
import pytest

from flexpipe.emulator import EmulatorHandle, LatencyModel
from flexpipe.emulator.faults import FaultConfig, parse_assignment
from flexpipe.emulator.outputs import SchemaFaker, estimate_tokens, generate, summarize
from tests.emulator.helpers import client

ARTICLE = (
    "Honeybees are social insects that live in large colonies. A colony has one queen, "
    "thousands of workers and a few hundred drones. Workers collect nectar and pollen and "
    "turn nectar into honey. Honeybees communicate the location of flowers with a waggle "
    "dance. Beekeepers have kept honeybees for thousands of years."
)

SCHEMAS: list[dict[str, Any]] = [
    {
        "type": "object",
        "properties": {
            "title": {"type": "string", "maxLength": 40},
            "summary": {"type": "string", "minLength": 10},
            "sentiment": {"type": "string", "enum": ["positive", "neutral", "negative"]},
            "score": {"type": "number", "minimum": 0, "maximum": 1},
            "stars": {"type": "integer", "minimum": 1, "maximum": 5},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 3, "maxItems": 5},
            "published": {"type": "boolean"},
            "author": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "email": {"type": "string", "format": "email"},
                },
                "required": ["name"],
                "additionalProperties": False,
            },
            "note": {"type": ["string", "null"]},
        },
        "required": [
            "title",
            "summary",
            "sentiment",
            "score",
            "stars",
            "tags",
            "published",
            "author",
            "note",
        ],
        "additionalProperties": False,
    },
    {
        "$defs": {
            "step": {
                "type": "object",
                "properties": {
                    "n": {"type": "integer", "exclusiveMinimum": 0, "multipleOf": 2},
                    "what": {"type": "string"},
                },
                "required": ["n", "what"],
            }
        },
        "type": "object",
        "properties": {
            "steps": {
                "type": "array",
                "items": {"$ref": "#/$defs/step"},
                "minItems": 1,
                "maxItems": 1,
            },
            "kind": {"anyOf": [{"type": "string", "enum": ["a", "b"]}, {"type": "null"}]},
            "level": {"const": "high"},
            "merged": {
                "allOf": [
                    {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]},
                    {"properties": {"y": {"type": "string", "minLength": 200}}, "required": ["y"]},
                ]
            },
        },
        "required": ["steps", "kind", "level", "merged"],
    },
    {"type": "array", "items": {"type": "number", "maximum": -10}, "minItems": 4},
]


def msgs(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_summary_is_deterministic_and_mentions_the_topic() -> None:
    a = summarize(msgs(ARTICLE), seed=1)
    assert a == summarize(msgs(ARTICLE), seed=1)
    assert "Honeybees" in a and len(a) < len(ARTICLE)
    assert summarize(msgs(ARTICLE), seed=2) != a
    assert summarize(msgs(ARTICLE + " Bears like honey."), seed=1) != a
    texts = {summarize(msgs(f"{ARTICLE} Item {i}."), seed=0) for i in range(200)}
    assert len(texts) == 200


def test_token_estimate_and_truncation() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd") == 1 and estimate_tokens("abcde") == 2
    out = generate(msgs(ARTICLE), None, None, 0)
    assert out.input_tokens == estimate_tokens(ARTICLE)
    assert out.output_tokens == estimate_tokens(out.text) and not out.truncated
    cut = generate(msgs(ARTICLE), None, 3, 0)
    assert cut.truncated and cut.text == out.text[:12] and cut.output_tokens == 3


@pytest.mark.parametrize("schema", SCHEMAS)
def test_schema_faker_output_validates(schema: dict[str, Any]) -> None:
    for seed in range(5):
        value = SchemaFaker(msgs(f"{ARTICLE} {seed}"), seed, schema).value()
        jsonschema.validate(value, schema)
    assert (
        SchemaFaker(msgs(ARTICLE), 0, schema).value()
        == SchemaFaker(msgs(ARTICLE), 0, schema).value()
    )


def test_enums_vary_with_input() -> None:
    schema = {
        "type": "object",
        "properties": {"label": {"enum": list("abcdefgh")}},
        "required": ["label"],
    }
    labels = {SchemaFaker(msgs(f"text {i}"), 0, schema).value()["label"] for i in range(40)}
    assert len(labels) > 3


@pytest.mark.parametrize("flavor", ["openai", "doubleword"])
def test_structured_outputs_through_the_sdk(
    start: Callable[..., EmulatorHandle],
    flavor: str,
    check_response: Callable[[Any], dict[str, Any]],
) -> None:
    h = start(flavor=flavor)
    c = client(h)
    for schema in SCHEMAS[:2]:
        fmt = {"type": "json_schema", "name": "answer", "schema": schema, "strict": True}
        resp = c.responses.create(
            model="m", input=ARTICLE, service_tier="flex", text={"format": fmt}
        )  # type: ignore[typeddict-item]
        jsonschema.validate(json.loads(resp.output_text), schema)
        if flavor == "openai":
            data = check_response(resp)
            assert data["text"]["format"]["type"] == "json_schema"
    obj = c.responses.create(model="m", input=ARTICLE, text={"format": {"type": "json_object"}})
    parsed = json.loads(obj.output_text)
    assert isinstance(parsed, dict) and "Honeybees" in parsed["summary"]
    chat = c.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": ARTICLE}],
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMAS[0]}},
    )
    jsonschema.validate(json.loads(chat.choices[0].message.content or ""), SCHEMAS[0])


def test_same_input_same_text_across_instances(start: Callable[..., EmulatorHandle]) -> None:
    a = client(start(seed=4)).responses.create(model="m", input=ARTICLE)
    b = client(start(seed=4)).responses.create(model="m", input=ARTICLE)
    c = client(start(seed=5)).responses.create(model="m", input=ARTICLE)
    assert a.output_text == b.output_text != c.output_text


def test_latency_models() -> None:
    assert LatencyModel.parse("fixed:2").draw(random.Random(0)) == 2
    assert LatencyModel.parse("3") == LatencyModel("fixed", 3)
    u = LatencyModel.parse("uniform:1,2")
    draws = [u.draw(random.Random(i)) for i in range(50)]
    assert all(1 <= d <= 2 for d in draws)
    ln = LatencyModel.parse("lognormal:60,0.6")
    values = sorted(ln.draw(random.Random(i)) for i in range(1001))
    assert 45 < values[500] < 75 and values[0] > 0
    assert str(ln) == "lognormal:60,0.6"
    for bad in ("gamma:1,2", "uniform:2,1", "fixed:-1", "lognormal:1"):
        with pytest.raises(ValueError):
            LatencyModel.parse(bad)


def test_latencies_are_deterministic_per_creation_index(
    start: Callable[..., EmulatorHandle],
) -> None:
    from flexpipe.emulator.config import EmulatorConfig
    from flexpipe.emulator.queue import draw_latencies

    cfg = EmulatorConfig(seed=7, time_scale=0.5)
    a = [draw_latencies(cfg, "flex", i) for i in range(10)]
    assert a == [
        draw_latencies(EmulatorConfig(seed=7, time_scale=0.5), "flex", i) for i in range(10)
    ]
    assert a != [
        draw_latencies(EmulatorConfig(seed=8, time_scale=0.5), "flex", i) for i in range(10)
    ]
    assert a[0][0] == 0.5  # default flex queue delay fixed:1, scaled


def test_fault_config_parsing() -> None:
    assert parse_assignment("fail_rate=0.5") == ("fail_rate", 0.5)
    assert parse_assignment("error_statuses=[502]") == ("error_statuses", [502])
    cfg = FaultConfig().merged(
        {"read_once": "yes", "retry_after_ms": "250", "error_statuses": "500,503"}
    )
    assert cfg.read_once and cfg.retry_after_ms == 250 and cfg.error_statuses == [500, 503]
    for bad in ({"nope": 1}, {"drop_rate": -0.1}, {"error_statuses": [200]}):
        with pytest.raises(ValueError):
            FaultConfig().merged(bad)
