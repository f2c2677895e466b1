"""FlexClient over real HTTP: it reads the JSON body itself (no SDK model), so what it
keeps must equal what the SDK's own ``Response`` model says about the same response."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import SimpleNamespace

import pytest

from flexpipe import errors
from flexpipe.client import FlexClient, ProviderResponse, _parse_raw
from flexpipe.emulator import EmulatorHandle
from flexpipe.models import build_request
from tests.emulator.helpers import client, set_faults

DOC = "The lighthouse keeper logged three storms and one shipwreck in March."


def _flex(handle: EmulatorHandle) -> FlexClient:
    return FlexClient(handle.base_url, "test-key", max_retries=0)


def _until_terminal(flex: FlexClient, response_id: str) -> ProviderResponse:
    end = time.monotonic() + 10
    while True:
        got = flex.retrieve(response_id)
        if got.terminal or time.monotonic() > end:
            return got
        time.sleep(0.01)


@pytest.mark.parametrize("flavor", ["doubleword", "openai"])
@pytest.mark.parametrize("max_output_tokens", [None, 16])
def test_what_flexclient_keeps_equals_the_sdk_model(
    start: Callable[..., EmulatorHandle], flavor: str, max_output_tokens: int | None
) -> None:
    handle = start(flavor=flavor)
    flex = _flex(handle)
    request = build_request(
        DOC, model="m", instructions="Summarise.", max_output_tokens=max_output_tokens
    )
    created = flex.create("job1", request)
    assert created.id.startswith("resp") and not created.terminal
    got = _until_terminal(flex, created.id)

    sdk = client(handle).responses.retrieve(created.id)  # the SDK's own parse
    assert got.status == sdk.status
    assert got.status == (
        "completed"
        if max_output_tokens is None
        else {"doubleword": "completed", "openai": "incomplete"}[flavor]
    )
    assert got.incomplete_reason == (sdk.incomplete_details and sdk.incomplete_details.reason)
    assert got.output_text == sdk.output_text and got.output_text
    assert got.output == [item.model_dump(mode="json", exclude_unset=True) for item in sdk.output]
    assert got.served_tier == sdk.service_tier
    assert got.created_at == sdk.created_at
    assert got.completed_at == getattr(sdk, "completed_at", None)
    assert sdk.usage is not None and got.usage is not None
    assert got.usage.input_tokens == sdk.usage.input_tokens
    assert got.usage.output_tokens == sdk.usage.output_tokens
    assert got.usage.total_tokens == sdk.usage.total_tokens
    assert got.usage.cached_tokens == sdk.usage.input_tokens_details.cached_tokens
    assert got.usage.reasoning_tokens == sdk.usage.output_tokens_details.reasoning_tokens
    # An answer cut by max_output_tokens: its message is marked incomplete.
    assert got.truncated is (max_output_tokens is not None)
    assert got.truncated is (sdk.output[0].status == "incomplete")


@pytest.mark.parametrize("flavor", ["doubleword", "openai"])
def test_a_failed_response_keeps_the_providers_error(
    start: Callable[..., EmulatorHandle], flavor: str
) -> None:
    handle = start(flavor=flavor, faults={"fail_rate": 1.0})
    flex = _flex(handle)
    got = _until_terminal(flex, flex.create("job1", build_request(DOC, model="m")).id)
    sdk = client(handle).responses.retrieve(got.id)
    assert got.status == sdk.status == "failed"
    assert sdk.error is not None
    assert (got.error_code, got.error_message) == (str(sdk.error.code), sdk.error.message)
    assert got.error_message


def test_http_errors_become_flexpipe_errors(dw: EmulatorHandle) -> None:
    flex = _flex(dw)
    with pytest.raises(errors.ResponseNotFound):
        flex.retrieve("resp_does_not_exist")
    set_faults(dw, create_429_rate=1.0, retry_after_s=None, retry_after_ms=5)
    with pytest.raises(errors.RateLimited):
        flex.create("job1", build_request(DOC, model="m"))
    set_faults(dw, create_429_rate=0.0, create_5xx_rate=1.0, error_statuses=[503])
    with pytest.raises(errors.ProviderUnavailable):
        flex.create("job1", build_request(DOC, model="m"))


@pytest.mark.parametrize("body", [b"<html>bad gateway</html>", b"[]", b'{"status": "queued"}'])
def test_an_unreadable_body_is_a_retryable_provider_fault(body: bytes) -> None:
    with pytest.raises(errors.ProviderUnavailable, match="unreadable body"):
        _parse_raw(SimpleNamespace(content=body, status_code=200))
