"""The openai → flexpipe error boundary is complete, and every error pickles."""

from __future__ import annotations

import inspect
import pickle

import httpx2
import openai
import pytest

from flexpipe import errors
from flexpipe.client import retry_after_seconds, translate_error

REQUEST = httpx2.Request("GET", "http://127.0.0.1/v1/responses/resp_1")


def _status_error(cls: type[openai.APIStatusError], status: int, headers=None, body=None):
    response = httpx2.Response(status, request=REQUEST, headers=headers or {})
    return cls(f"HTTP {status}", response=response, body=body)


def _all_openai_errors() -> list[type[BaseException]]:
    return sorted(
        (
            cls
            for _, cls in inspect.getmembers(openai, inspect.isclass)
            if issubclass(cls, openai.OpenAIError)
        ),
        key=lambda c: c.__name__,
    )


def _instance(cls: type[BaseException]) -> openai.OpenAIError:
    if issubclass(cls, openai.APIStatusError):
        status = {
            "BadRequestError": 400,
            "AuthenticationError": 401,
            "OAuthError": 401,
            "PermissionDeniedError": 403,
            "NotFoundError": 404,
            "ConflictError": 409,
            "UnprocessableEntityError": 422,
            "RateLimitError": 429,
            "InternalServerError": 500,
            "APIStatusError": 418,
        }.get(cls.__name__, 400)
        if cls.__name__ == "OAuthError":
            return cls(response=httpx2.Response(status, request=REQUEST), body=None)
        return _status_error(cls, status)
    if issubclass(cls, openai.APITimeoutError):
        return cls(request=REQUEST)
    if issubclass(cls, openai.APIConnectionError):
        return cls(request=REQUEST)
    if issubclass(cls, openai.APIResponseValidationError):
        return cls(response=httpx2.Response(200, request=REQUEST), body=None)
    if issubclass(cls, openai.APIError):
        return cls("broken", REQUEST, body=None)
    try:
        return cls("broken")  # type: ignore[call-arg]
    except TypeError:
        return cls.__new__(cls)  # type: ignore[call-overload,no-any-return]


def test_every_openai_exception_maps_to_a_flexpipe_error() -> None:
    classes = _all_openai_errors()
    assert len(classes) >= 15  # the SDK's whole tree, not a handful
    for cls in classes:
        exc = _instance(cls)
        for reading in (False, True):
            mapped = translate_error(exc, reading=reading)
            assert isinstance(mapped, errors.ProviderError), cls
            assert mapped.message, cls


@pytest.mark.parametrize(
    ("status", "reading", "expected"),
    [
        (400, False, errors.RequestRejected),
        (401, False, errors.AuthenticationFailed),
        (403, True, errors.AuthenticationFailed),
        (404, False, errors.RequestRejected),
        (404, True, errors.ResponseNotFound),
        (405, False, errors.RequestRejected),
        (408, False, errors.ProviderUnavailable),
        (409, True, errors.ProviderUnavailable),
        (410, True, errors.ResponseGone),
        (422, False, errors.RequestRejected),
        (429, False, errors.RateLimited),
        (499, True, errors.RequestRejected),
        (500, True, errors.ProviderUnavailable),
        (503, False, errors.ProviderUnavailable),
    ],
)
def test_status_codes_map_to_retryable_or_permanent(status, reading, expected) -> None:
    exc = _status_error(openai.APIStatusError, status, body={"error": {"message": "nope"}})
    mapped = translate_error(exc, reading=reading)
    assert type(mapped) is expected
    assert mapped.status_code == status
    assert "nope" in mapped.message


def test_connection_errors_are_retryable() -> None:
    assert isinstance(
        translate_error(openai.APITimeoutError(request=REQUEST), reading=True),
        errors.ProviderUnreachable,
    )
    assert isinstance(
        translate_error(openai.APIConnectionError(request=REQUEST), reading=False),
        errors.RetryableProviderError,
    )


def test_plain_text_bodies_are_kept_in_the_message() -> None:
    exc = _status_error(openai.NotFoundError, 404, body="response with ID resp_x not found")
    mapped = translate_error(exc, reading=True)
    assert mapped.message == "HTTP 404: response with ID resp_x not found"


def test_retry_after_headers() -> None:
    assert retry_after_seconds(httpx2.Headers({"retry-after-ms": "1500"})) == 1.5
    assert retry_after_seconds(httpx2.Headers({"retry-after": "7"})) == 7.0
    assert retry_after_seconds(httpx2.Headers({})) is None
    assert retry_after_seconds(httpx2.Headers({"retry-after": "soon"})) is None
    exc = _status_error(openai.RateLimitError, 429, headers={"retry-after": "3"})
    assert translate_error(exc, reading=False).retry_after == 3.0


@pytest.mark.parametrize(
    "error",
    [
        errors.ValidationError("model", "a model name is required"),
        errors.ConfigurationError("bad"),
        errors.JobNotFound("no job"),
        errors.RateLimited("slow down", status_code=429, retry_after=2.5),
        errors.ResponseGone("gone", status_code=410),
        errors.RequestRejected("bad", status_code=400, code="custom"),
        errors.DatabaseUnavailable("read-only", sqlstate="25006"),
        errors.ConstraintViolated("duplicate key", sqlstate="23505"),
        errors.DatabaseRejected("no such table"),
    ],
)
def test_errors_pickle(error: errors.FlexpipeError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert copy.__dict__ == error.__dict__
    assert str(copy) == str(error)


def test_tree() -> None:
    for cls in (
        errors.RateLimited,
        errors.ProviderUnavailable,
        errors.ProviderUnreachable,
        errors.ResponseNotFound,
    ):
        assert issubclass(cls, errors.RetryableProviderError)
    for cls in (errors.RequestRejected, errors.AuthenticationFailed, errors.ResponseGone):
        assert issubclass(cls, errors.PermanentProviderError)
    assert not issubclass(errors.RetryableProviderError, errors.PermanentProviderError)
