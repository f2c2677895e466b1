"""Fixtures for the emulator contract tests: real servers in threads, the Response schema."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from flexpipe.emulator import EmulatorConfig, EmulatorHandle, run_in_thread
from tests.emulator.helpers import VIOLATIONS, fast_config, response_validator, schema_errors


@pytest.fixture(autouse=True)
def _no_schema_violations() -> Iterator[None]:
    """Fail a test if any openai-flavour Response its SDK clients received broke the schema."""
    VIOLATIONS.clear()
    yield
    found, VIOLATIONS[:] = list(VIOLATIONS), []
    assert not found, "Response objects that break the OpenAPI schema:\n" + "\n".join(found[:10])


@pytest.fixture(scope="session")
def validator() -> Draft202012Validator:
    """The ``components/schemas/Response`` validator (JSON subset in data/, loaded once)."""
    return response_validator()


@pytest.fixture
def check_response(validator: Draft202012Validator) -> Callable[[Any], dict[str, Any]]:
    """Validate an SDK ``Response`` (or dict) against the schema; returns the raw dict."""

    def check(obj: Any) -> dict[str, Any]:
        data: dict[str, Any] = (
            obj
            if isinstance(obj, dict)
            else obj.model_dump(mode="json", exclude_unset=True, by_alias=True)
        )
        errors = schema_errors(data)
        assert not errors, "\n".join(errors[:5])
        return data

    return check


@pytest.fixture
def start() -> Iterator[Callable[..., EmulatorHandle]]:
    """Factory: ``start(flavor="openai", slots=1, ...)`` → a running emulator (stopped after)."""
    handles: list[EmulatorHandle] = []

    def _start(config: EmulatorConfig | None = None, **overrides: Any) -> EmulatorHandle:
        handle = run_in_thread(config or fast_config(**overrides))
        handles.append(handle)
        return handle

    yield _start
    for handle in handles:
        handle.stop()


@pytest.fixture
def dw(start: Callable[..., EmulatorHandle]) -> EmulatorHandle:
    return start(flavor="doubleword")


@pytest.fixture
def oa(start: Callable[..., EmulatorHandle]) -> EmulatorHandle:
    return start(flavor="openai")
