"""Text helpers: prompts as chat messages, the token estimate, and extractive summaries.

Token estimate (used for ``usage`` and ``max_output_tokens``): ``tokens = ceil(chars / 4)``
of the text concerned; input tokens count the instructions plus every input message's text.

The summary is extractive: the most informative sentences of the last user message (scored
by how many of the message's frequent words they contain), in their original order, behind a
lead-in picked by hash and followed by a short ``[ref <hex>]`` tag hashed from the whole
prompt. Same input, instructions and seed give the same text; different inputs give
different texts (the tag tells near-identical prompts apart, so a pipeline that mixes up
results is caught); a summary of a document about X mentions X.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n{2,}")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]{2,}")
_STOP = frozenset(
    """
    the and for are but not you all any can had her was one
    our out has his how its may new now old see two way who
    did get let put say she too use that with have this will your
    from they been were said each which their there what about would make like
    into them these some than then more also very when where while after before
    other such only over just most should could being because those does doing through
    between under again further once here both few own same why whom itself please
    summarize summarise summary text following document article below above write give brief short
    """.split()  # noqa: SIM905
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


def main_text(messages: list[dict[str, str]]) -> str:
    for m in reversed(messages):
        if m["role"] == "user" and m["content"].strip():
            return m["content"]
    return prompt_text(messages)


def keywords(text: str, n: int) -> list[str]:
    counts = Counter(w.lower() for w in _WORD.findall(text) if w.lower() not in _STOP)
    return [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


def summarize(messages: list[dict[str, str]], seed: int, max_sentences: int = 3) -> str:
    """A deterministic extractive summary of the last user message."""
    text = main_text(messages)
    sentences = [s.strip() for s in _SENTENCE.split(text) if s and s.strip()]
    h = digest("summary", seed, prompt_text(messages))
    lead = _LEADS[h % len(_LEADS)]
    ref = f" [ref {h & 0xFFFFFFFF:08x}]"
    if not sentences:
        return "There is nothing to summarize: the input was empty." + ref
    if len(sentences) == 1 and len(sentences[0]) < 200:
        words = keywords(text, 3)
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
