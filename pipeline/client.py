"""The provider client: the one module that knows the ``openai`` SDK.

:class:`FlexClient` sends flex requests (``responses.create`` with ``background=True``,
``store=True``), reads them back by id and cancels them; it returns
:class:`ProviderResponse` records and raises only :mod:`pipeline.errors` exceptions.
:func:`translate_error` is the single boundary where ``openai`` exceptions become ours.
"""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import openai

# ``openai`` is imported where it is first used, not here: a worker's main process and beat
# import this module but never call the provider, and the SDK costs ~47 MB of RSS each.

from pipeline import errors
from pipeline.models import JOB_ID_METADATA_KEY, JobRequest, Usage

_TERMINAL = frozenset({"completed", "failed", "cancelled", "incomplete"})


@dataclass(frozen=True, slots=True)
class ProviderResponse:
    """What the provider said about one response, reduced to what flexpipe keeps."""

    id: str
    status: str
    output_text: str = ""
    output: list[dict[str, Any]] | None = None
    usage: Usage | None = None
    served_tier: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    incomplete_reason: str | None = None
    truncated: bool = False
    created_at: float | None = None
    completed_at: float | None = None

    @property
    def terminal(self) -> bool:
        return self.status in _TERMINAL


class FlexClient:
    """A thin, thread-safe wrapper over ``openai.OpenAI`` for flex requests.

    ``max_retries`` is the SDK's own retry count for 408/409/429/5xx and connection errors
    inside one call; flexpipe's task-level retries come on top of it.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 60.0,
        blocking_timeout: float = 900.0,
        max_retries: int = 2,
    ) -> None:
        self.base_url = base_url
        self._blocking_timeout = blocking_timeout
        import openai

        self._sdk = openai.OpenAI(
            base_url=base_url, api_key=api_key, timeout=timeout, max_retries=max_retries
        )

    def create(self, job_id: str, request: JobRequest, *, attempt: int = 1) -> ProviderResponse:
        """Send one request; background mode returns at once, blocking mode when done."""
        blocking = request.mode == "blocking"
        import openai

        params: dict[str, Any] = {
            "model": request.model,
            "input": request.input,
            "service_tier": request.service_tier,
            "background": not blocking,
            "store": True,
            "metadata": {**request.metadata, JOB_ID_METADATA_KEY: job_id},
        }
        if request.instructions is not None:
            params["instructions"] = request.instructions
        if request.max_output_tokens is not None:
            params["max_output_tokens"] = request.max_output_tokens
        if request.temperature is not None:
            params["temperature"] = request.temperature
        if request.schema is not None:
            params["text"] = {
                "format": {
                    "type": "json_schema",
                    "name": request.schema_name,
                    "schema": request.schema,
                    "strict": True,
                }
            }
        headers = {"Idempotency-Key": f"flexpipe-{job_id}-{attempt}"}
        try:
            if blocking:
                response = self._sdk.responses.create(
                    **params, extra_headers=headers, timeout=self._blocking_timeout
                )
            else:
                response = self._sdk.responses.create(**params, extra_headers=headers)
        except openai.OpenAIError as exc:
            raise translate_error(exc, reading=False) from exc
        return parse_response(response)

    def retrieve(self, response_id: str) -> ProviderResponse:
        """Read a response by id."""
        import openai

        try:
            response = self._sdk.responses.retrieve(response_id)
        except openai.OpenAIError as exc:
            raise translate_error(exc, reading=True) from exc
        return parse_response(response)

    def cancel(self, response_id: str) -> ProviderResponse:
        """Cancel a background response; raises ``RequestRejected`` where there is no cancel."""
        import openai

        try:
            response = self._sdk.responses.cancel(response_id)
        except openai.OpenAIError as exc:
            raise translate_error(exc, reading=False) from exc
        return parse_response(response)

    def close(self) -> None:
        self._sdk.close()


def parse_response(response: Any) -> ProviderResponse:
    """Reduce an SDK ``Response`` to a :class:`ProviderResponse` (full detail if terminal)."""
    status = str(response.status or "")
    if status not in _TERMINAL:
        return ProviderResponse(id=response.id, status=status, served_tier=response.service_tier)
    items = list(response.output or [])
    truncated = any(
        getattr(item, "type", None) == "message" and getattr(item, "status", None) == "incomplete"
        for item in items
    )
    error = response.error
    incomplete = response.incomplete_details
    return ProviderResponse(
        id=response.id,
        status=status,
        output_text=response.output_text,
        output=[item.model_dump(mode="json", exclude_unset=True) for item in items],
        usage=_usage(response.usage),
        served_tier=response.service_tier,
        error_code=None if error is None else str(getattr(error, "code", None) or "error"),
        error_message=None if error is None else str(getattr(error, "message", "") or ""),
        incomplete_reason=None if incomplete is None else getattr(incomplete, "reason", None),
        truncated=truncated,
        created_at=_float(response.created_at),
        completed_at=_float(getattr(response, "completed_at", None)),
    )


def _usage(usage: Any) -> Usage | None:
    if usage is None:
        return None
    input_details = getattr(usage, "input_tokens_details", None)
    output_details = getattr(usage, "output_tokens_details", None)
    input_tokens = int(getattr(usage, "input_tokens", 0) or 0)
    output_tokens = int(getattr(usage, "output_tokens", 0) or 0)
    return Usage(
        input_tokens=input_tokens,
        cached_tokens=int(getattr(input_details, "cached_tokens", 0) or 0),
        output_tokens=output_tokens,
        reasoning_tokens=int(getattr(output_details, "reasoning_tokens", 0) or 0),
        total_tokens=int(getattr(usage, "total_tokens", 0) or (input_tokens + output_tokens)),
    )


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def translate_error(exc: openai.OpenAIError, *, reading: bool) -> errors.ProviderError:
    """Map an ``openai`` exception onto the flexpipe error tree.

    ``reading`` is True for reads by id, where 404 means "not visible (yet)" and is worth
    retrying a bounded number of times; on create a 404 means a wrong model or URL.
    """
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return errors.ProviderUnreachable(f"provider timed out: {exc.message}")
    if isinstance(exc, openai.APIConnectionError):
        return errors.ProviderUnreachable(f"cannot reach the provider: {exc.message}")
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        message = _status_message(exc)
        retry_after = retry_after_seconds(exc.response.headers)
        kwargs: dict[str, Any] = {"status_code": status, "retry_after": retry_after}
        if status == 429:
            return errors.RateLimited(message, **kwargs)
        if status >= 500 or status in (408, 409):
            return errors.ProviderUnavailable(message, **kwargs)
        if status in (401, 403):
            return errors.AuthenticationFailed(message, **kwargs)
        if status == 410:
            return errors.ResponseGone(message, **kwargs)
        if status == 404 and reading:
            return errors.ResponseNotFound(message, **kwargs)
        return errors.RequestRejected(message, **kwargs)
    if isinstance(exc, openai.APIError):
        # APIResponseValidationError and other errors with a body but no usable status.
        return errors.PermanentProviderError(f"unusable provider answer: {exc.message}")
    return errors.PermanentProviderError(f"{type(exc).__name__}: {exc}")


def _status_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return f"HTTP {exc.status_code}: {inner['message']}"
    if isinstance(body, str) and body.strip():
        return f"HTTP {exc.status_code}: {body.strip()[:500]}"
    return f"HTTP {exc.status_code}: {exc.message}"


def retry_after_seconds(headers: Any) -> float | None:
    """Read ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date); None if absent."""
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, parsed.timestamp() - time.time())
