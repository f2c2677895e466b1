"""Structured outputs: a JSON value that validates against a ``json_schema`` text format."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from flexpipe.emulator.text import digest, keywords, main_text, prompt_text, summarize

_STRING_FORMATS = {
    "date-time": "2026-01-01T00:00:00Z",
    "date": "2026-01-01",
    "time": "00:00:00",
    "email": "someone@example.com",
    "uri": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "192.0.2.1",
}
_PROSE_NAMES = ("summary", "description", "text", "answer", "content", "explanation", "reason")
_TITLE_NAMES = ("title", "name", "headline", "subject", "topic", "label")


class SchemaFaker:
    """Builds a JSON value that validates against a (JSON Schema) structured-output schema.

    Supports objects (all properties are produced), arrays (``minItems``/``maxItems``),
    ``enum``/``const`` (picked by hash), strings (``minLength``/``maxLength``/``format``),
    integers and numbers (``minimum``/``maximum``, exclusive bounds, ``multipleOf``),
    booleans, null, type lists, ``$ref`` into ``$defs``/``definitions``, ``anyOf``/``oneOf``
    (first option) and ``allOf`` (merged).
    """

    def __init__(self, messages: list[dict[str, str]], seed: int, root: Mapping[str, Any]):
        self.root = root
        self.main = main_text(messages)
        self.seed = seed
        self.summary = summarize(messages, seed, max_sentences=2)
        self.words = keywords(self.main, 12) or ["item"]
        self.base = digest("schema", seed, prompt_text(messages))

    def value(self) -> Any:
        return self._gen(self.root, "$", 0)

    def _pick(self, path: str, n: int) -> int:
        return digest(self.base, path) % n if n > 0 else 0

    def _resolve(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        seen = 0
        while isinstance(schema.get("$ref"), str) and seen < 32:
            ref: str = schema["$ref"]
            node: Any = self.root
            for part in ref.lstrip("#").split("/"):
                if part:
                    node = node.get(part.replace("~1", "/").replace("~0", "~"), {})
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**node, **rest} if isinstance(node, Mapping) else rest
            seen += 1
        return schema

    def _gen(self, schema: Any, path: str, depth: int) -> Any:
        if not isinstance(schema, Mapping):
            return self.words[0]
        schema = self._resolve(schema)
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return schema["enum"][self._pick(path, len(schema["enum"]))]
        for key in ("anyOf", "oneOf"):
            options = schema.get(key)
            if isinstance(options, list) and options:
                return self._gen(options[0], path, depth)
        if isinstance(schema.get("allOf"), list):
            merged: dict[str, Any] = {}
            for part in schema["allOf"]:
                part = self._resolve(part) if isinstance(part, Mapping) else {}
                props = {**merged.get("properties", {}), **part.get("properties", {})}
                required = [*merged.get("required", []), *part.get("required", [])]
                merged = {**merged, **part, "properties": props, "required": required}
            rest = {k: v for k, v in schema.items() if k != "allOf"}
            return self._gen({**merged, **rest}, path, depth)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind is None:
            kind = "object" if "properties" in schema else None
            kind = kind or ("array" if "items" in schema else "string")
        if kind == "object":
            return self._object(schema, path, depth)
        if kind == "array":
            return self._array(schema, path, depth)
        if kind == "integer":
            return int(self._number(schema, path, integer=True))
        if kind == "number":
            return self._number(schema, path, integer=False)
        if kind == "boolean":
            return self._pick(path, 2) == 0
        if kind == "null":
            return None
        return self._string(schema, path)

    def _object(self, schema: Mapping[str, Any], path: str, depth: int) -> dict[str, Any]:
        props = schema.get("properties") or {}
        if depth > 8:
            props = {k: v for k, v in props.items() if k in (schema.get("required") or [])}
        return {name: self._gen(sub, f"{path}.{name}", depth + 1) for name, sub in props.items()}

    def _array(self, schema: Mapping[str, Any], path: str, depth: int) -> list[Any]:
        lo = int(schema.get("minItems", 0))
        hi = int(schema.get("maxItems", max(lo, 3)))
        n = min(max(lo, 2 + self._pick(path + "#n", 2)), hi) if depth <= 8 else lo
        prefix = schema.get("prefixItems") or []
        items = schema.get("items", {})
        out = []
        for i in range(n):
            sub = prefix[i] if i < len(prefix) else items
            out.append(self._gen(sub, f"{path}[{i}]", depth + 1))
        if schema.get("uniqueItems") and len({json.dumps(v, sort_keys=True) for v in out}) < n:
            out = out[: max(lo, 1)] if n else out
        return out

    def _number(self, schema: Mapping[str, Any], path: str, integer: bool) -> float:
        lo = schema.get("minimum", schema.get("exclusiveMinimum"))
        hi = schema.get("maximum", schema.get("exclusiveMaximum"))
        step = 1.0 if integer else 0.5
        if lo is not None and "minimum" not in schema:
            lo = (math.floor(lo) + 1) if integer else lo + min(step, 0.001)
        if hi is not None and "maximum" not in schema:
            hi = (math.ceil(hi) - 1) if integer else hi - min(step, 0.001)
        if integer:
            lo = math.ceil(lo) if lo is not None else None
            hi = math.floor(hi) if hi is not None else None
        lo_f = float(lo) if lo is not None else (float(hi) - 100 if hi is not None else 0.0)
        hi_f = float(hi) if hi is not None else lo_f + 100
        span = max(0.0, hi_f - lo_f)
        value = lo_f + (self._pick(path, 1000) / 999.0) * span
        value = float(round(value)) if integer else round(value, 3)
        mult = schema.get("multipleOf")
        if isinstance(mult, int | float) and mult > 0:
            first, last = math.ceil(lo_f / mult), math.floor(hi_f / mult)
            if last >= first:
                k = first + self._pick(path + "#m", last - first + 1)
                value = k * mult if not integer else float(int(k * mult))
        return value

    def _string(self, schema: Mapping[str, Any], path: str) -> str:
        fmt = schema.get("format")
        if isinstance(fmt, str) and fmt in _STRING_FORMATS:
            return _STRING_FORMATS[fmt]
        name = path.rsplit(".", 1)[-1].split("[", 1)[0].lower()
        if any(p in name for p in _PROSE_NAMES):
            text = self.summary
        elif any(p in name for p in _TITLE_NAMES):
            text = " ".join(w.capitalize() for w in self.words[:4])
        else:
            text = self.words[self._pick(path, len(self.words))]
        lo = int(schema.get("minLength", 0))
        hi = schema.get("maxLength")
        while len(text) < lo:
            text = (text + " " + " ".join(self.words)).strip()
        if isinstance(hi, int) and len(text) > hi:
            text = text[:hi]
        return text
