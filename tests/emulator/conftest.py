"""Fixtures for the emulator contract tests: real servers in threads, the Response schema."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from pipeline.emulator import EmulatorConfig, EmulatorHandle, run_in_thread
from tests.emulator.helpers import fast_config

SCHEMA_PATH = Path(__file__).parent / "data" / "response_schema.json"


@pytest.fixture(scope="session")
def response_validator() -> Draft202012Validator:
    """Validates a JSON object against ``components/schemas/Response`` (OpenAPI subset)."""
    doc = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return Draft202012Validator(doc)


@pytest.fixture
def check_response(response_validator: Draft202012Validator) -> Callable[[Any], dict[str, Any]]:
    """Validate an SDK ``Response`` (or dict) against the schema; returns the raw dict."""

    def check(obj: Any) -> dict[str, Any]:
        data: dict[str, Any] = (
            obj
            if isinstance(obj, dict)
            else obj.model_dump(mode="json", exclude_unset=True, by_alias=True)
        )
        errors = sorted(response_validator.iter_errors(data), key=lambda e: list(e.path))
        assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:5])
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
