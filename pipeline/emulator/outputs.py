"""Deterministic model outputs: summary-looking text and schema-valid JSON.

The text is an extractive summary of the request: the most informative sentences of the
last user message (scored by how many of the message's frequent words they contain), in
their original order, behind a lead-in picked by hash and followed by a short ``[ref <hex>]``
tag hashed from the whole prompt. Same input, instructions and seed give the same text;
different inputs give different texts (the tag tells near-identical prompts apart, so a
pipeline that mixes up results is caught); a summary of a document about X mentions X.

Token estimate (used for ``usage`` and ``max_output_tokens``): ``tokens = ceil(chars / 4)``
of the text concerned; input tokens count the instructions plus every input message's text.
A text over ``max_output_tokens`` is cut to ``4 * max_output_tokens`` characters and marked
truncated.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n{2,}")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]{2,}")
_STOP = frozenset(
    (
        "the",
        "and",
        "for",
        "are",
        "but",
        "not",
        "you",
        "all",
        "any",
        "can",
        "had",
        "her",
        "was",
        "one",
        "our",
        "out",
        "has",
        "his",
        "how",
        "its",
        "may",
        "new",
        "now",
        "old",
        "see",
        "two",
        "way",
        "who",
        "did",
        "get",
        "let",
        "put",
        "say",
        "she",
        "too",
        "use",
        "that",
        "with",
        "have",
        "this",
        "will",
        "your",
        "from",
        "they",
        "been",
        "were",
        "said",
        "each",
        "which",
        "their",
        "there",
        "what",
        "about",
        "would",
        "make",
        "like",
        "into",
        "them",
        "these",
        "some",
        "than",
        "then",
        "more",
        "also",
        "very",
        "when",
        "where",
        "while",
        "after",
        "before",
        "other",
        "such",
        "only",
        "over",
        "just",
        "most",
        "should",
        "could",
        "being",
        "because",
        "those",
        "does",
        "doing",
        "through",
        "between",
        "under",
        "again",
        "further",
        "once",
        "here",
        "both",
        "few",
        "own",
        "same",
        "why",
        "whom",
        "itself",
        "please",
        "summarize",
        "summarise",
        "summary",
        "text",
        "following",
        "document",
        "article",
        "below",
        "above",
        "write",
        "give",
        "brief",
        "short",
    )
)
_LEADS = ("", "In short: ", "Summary: ", "Key points: ", "Overview: ", "TL;DR: ")


def estimate_tokens(text: str) -> int:
    """The documented estimate: one token per four characters, rounded up."""
    return math.ceil(len(text) / 4)


def digest(*parts: object) -> int:
    """A stable 64-bit hash of the parts (independent of PYTHONHASHSEED)."""
    h = hashlib.blake2b(digest_size=8)
    for part in parts:
        h.update(str(part).encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")
    return int.from_bytes(h.digest(), "big")


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, Mapping):
                value = part.get("text", part.get("refusal", ""))
                if isinstance(value, str):
                    texts.append(value)
        return "\n".join(t for t in texts if t)
    return ""


def messages_from_input(input_: Any, instructions: Any = None) -> list[dict[str, str]]:
    """Responses ``input`` (+ ``instructions``) as chat messages ``[{"role", "content"}]``.

    Accepts a string, Responses input items (``{"role", "content"}``, ``{"type": "message"}``,
    ``function_call_output``) and chat-completions style messages.
    """
    messages: list[dict[str, str]] = []
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    if isinstance(input_, str):
        messages.append({"role": "user", "content": input_})
        return messages
    for item in input_ if isinstance(input_, list) else []:
        if not isinstance(item, Mapping):
            continue
        kind = item.get("type", "message")
        if kind == "message" or "role" in item:
            role = str(item.get("role", "user"))
            if role == "developer":
                role = "system"
            messages.append({"role": role, "content": _content_text(item.get("content"))})
        elif kind == "function_call_output":
            messages.append({"role": "user", "content": _content_text(item.get("output"))})
    return messages


def prompt_text(messages: list[dict[str, str]]) -> str:
    """All message texts joined (what the input-token estimate counts)."""
    return "\n".join(m["content"] for m in messages)


def _main_text(messages: list[dict[str, str]]) -> str:
    for m in reversed(messages):
        if m["role"] == "user" and m["content"].strip():
            return m["content"]
    return prompt_text(messages)


def _keywords(text: str, n: int) -> list[str]:
    counts = Counter(w.lower() for w in _WORD.findall(text) if w.lower() not in _STOP)
    return [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


def summarize(messages: list[dict[str, str]], seed: int, max_sentences: int = 3) -> str:
    """A deterministic extractive summary of the last user message."""
    text = _main_text(messages)
    sentences = [s.strip() for s in _SENTENCE.split(text) if s and s.strip()]
    h = digest("summary", seed, prompt_text(messages))
    lead = _LEADS[h % len(_LEADS)]
    ref = f" [ref {h & 0xFFFFFFFF:08x}]"
    if not sentences:
        return "There is nothing to summarize: the input was empty." + ref
    if len(sentences) == 1 and len(sentences[0]) < 200:
        words = _keywords(text, 3)
        about = ", ".join(words) if words else "the request"
        return f"{lead}A brief answer about {about}: {sentences[0]}{ref}"
    freq = Counter(w.lower() for w in _WORD.findall(text) if w.lower() not in _STOP)
    scored = []
    for i, s in enumerate(sentences):
        words = [w.lower() for w in _WORD.findall(s)]
        score = sum(freq[w] for w in words if w not in _STOP) / (1 + len(words)) ** 0.5
        score += 2.0 if i == 0 else 0.0  # lead sentences carry the topic
        scored.append((score, -i, i))
    keep = max(1, min(max_sentences, math.ceil(len(sentences) * 0.4)))
    chosen = sorted(i for _, _, i in sorted(scored, reverse=True)[:keep])
    body = " ".join(_clip(sentences[i], 300) for i in chosen)
    return f"{lead}{body}{ref}"


def _clip(sentence: str, limit: int) -> str:
    if len(sentence) <= limit:
        return sentence
    return sentence[: limit - 3].rsplit(" ", 1)[0] + "..."


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
        main = _main_text(messages)
        full = json.dumps(
            {"summary": summarize(messages, seed), "keywords": _keywords(main, 5)},
            ensure_ascii=False,
        )
    else:
        full = summarize(messages, seed)
    text, cut = truncate(full, max_output_tokens)
    return Output(text, estimate_tokens(prompt_text(messages)), estimate_tokens(text), cut)


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
        self.main = _main_text(messages)
        self.seed = seed
        self.summary = summarize(messages, seed, max_sentences=2)
        self.words = _keywords(self.main, 12) or ["item"]
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
