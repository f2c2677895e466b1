"""Property-based tests of request validation (Hypothesis): whatever text, nesting and
numbers a caller passes, ``build_request`` and ``enqueue`` raise nothing but
ValidationError, and a rejected ``enqueue`` writes no row and sends no message."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flexpipe.errors import ValidationError
from flexpipe.models import build_request, resolve_deadline
from flexpipe.tasks import api
from tests.unit.test_hostile_input import Local, local, nested  # noqa: F401 (fixture)

#: Any code point, lone surrogates and NUL included.
ANY_CHAR = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, categories=None)
TEXT = st.text(ANY_CHAR, max_size=40)
NUMBERS = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
)
SCALARS = st.one_of(TEXT, NUMBERS)
JSONISH = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(TEXT, st.integers()), inner, max_size=4),
    ),
    max_leaves=20,
)
#: Values nested from shallow to far beyond any recursion limit.
DEEP = st.integers(min_value=0, max_value=50_000).map(nested)
ANY_VALUE = st.one_of(JSONISH, DEEP, st.binary(max_size=8), st.just(object()))

FIELDS = [
    "input", "messages", "model", "instructions", "max_output_tokens", "temperature",
    "schema", "schema_name", "metadata", "idempotency_key", "callback", "deadline",
    "service_tier", "mode", "escalate",
]


@st.composite
def items(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Input items or chat messages with hostile contents."""
    role = draw(st.one_of(st.sampled_from(["user", "system", "assistant"]), ANY_VALUE))
    return [{"role": role, "content": draw(ANY_VALUE)} for _ in range(draw(st.integers(1, 3)))]


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    """A request with a few fields set to anything, the rest plausible."""
    request: dict[str, Any] = {"input": draw(st.one_of(TEXT, items(), ANY_VALUE))}
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=4, unique=True)):
        if name in ("input", "messages"):
            request.pop("input", None)
            request[name] = draw(st.one_of(items(), ANY_VALUE))
        elif name == "schema":
            request[name] = {"type": "object", "properties": {"a": draw(ANY_VALUE)}}
        elif name == "metadata":
            request[name] = draw(st.dictionaries(ANY_VALUE.filter(_hashable), ANY_VALUE,
                                                 max_size=3))
        else:
            request[name] = draw(ANY_VALUE)
    if draw(st.booleans()):
        request[draw(TEXT)] = draw(SCALARS)  # maybe an unknown keyword
    return request


def _hashable(value: object) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(request=requests())
def test_build_request_raises_only_validation_errors(request: dict[str, Any]) -> None:
    kwargs = {k: v for k, v in request.items() if k in FIELDS and k not in (
        "idempotency_key", "callback", "deadline", "escalate")}
    kwargs.setdefault("model", "m")
    try:
        built = build_request(**kwargs)
    except ValidationError as exc:
        assert exc.field.split("[")[0] in {*FIELDS, "messages"}
        return
    # What is accepted is text UTF-8 and SQL can carry.
    text = repr(built.to_json())
    assert "\\x00" not in text
    json.dumps(built.to_json(), ensure_ascii=False, allow_nan=False).encode("utf-8")


@settings(max_examples=200, deadline=None)
@given(deadline=st.one_of(NUMBERS, st.timedeltas(), st.datetimes(timezones=st.timezones()),
                          st.datetimes(), TEXT))
def test_deadlines_raise_only_validation_errors(deadline: Any) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    try:
        at = resolve_deadline(deadline, now)
    except ValidationError as exc:
        assert exc.field == "deadline"
        return
    assert at is None or now < at <= now + timedelta(days=30)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=requests())
def test_enqueue_rejects_with_validation_errors_only_and_then_writes_nothing(
    local: Local,  # noqa: F811
    request: dict[str, Any],
) -> None:
    before = (local.jobs(), local.messages())
    try:
        api.enqueue(**request)
    except ValidationError:
        assert (local.jobs(), local.messages()) == before
    else:
        assert (local.jobs(), local.messages()) == (before[0] + 1, before[1] + 1)


@pytest.mark.parametrize("depth", [33, 1_000, 200_000])
def test_deep_nesting_anywhere_is_a_validation_error(local: Local, depth: int) -> None:  # noqa: F811
    deep = nested(depth)
    for request in (
        {"input": [{"role": "user", "content": deep}]},
        {"messages": [{"role": "user", "content": deep}]},
        {"input": "x", "schema": {"type": "object", "properties": {"a": {"enum": deep}}}},
        {"input": "x", "callback": {"task": "tests.unit.cb", "kwargs": {"k": deep}}},
    ):
        with pytest.raises(ValidationError):
            api.enqueue(**request)
    assert local.nothing_written()
