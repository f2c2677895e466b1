"""The provider client: the one module that knows the ``openai`` SDK.

:class:`FlexClient` sends flex requests (``responses.create`` with ``background=True``,
``store=True``), reads them back by id and cancels them; it returns
:class:`ProviderResponse` records and raises only :mod:`flexpipe.errors` exceptions.
:func:`translate_error` is the single boundary where ``openai`` exceptions become ours.
"""

from __future__ import annotations

import email.utils
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import openai

# ``openai`` is imported where it is first used, not here: a worker's main process and beat
# import this module but never call the provider, and the SDK costs ~47 MB of RSS each.

from flexpipe import errors
from flexpipe.models import JOB_ID_METADATA_KEY, JobRequest, Usage, WebhookEvent, output_text_of

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
    inside one call; flexpipe's task-level retries come on top of it. Every call has a
    timeout: ``connect_timeout`` to connect, then ``timeout`` (``blocking_timeout`` for a
    blocking-mode create) for each read, write and wait for a pooled connection.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 60.0,
        blocking_timeout: float = 900.0,
        connect_timeout: float = 10.0,
        max_retries: int = 2,
    ) -> None:
        self.base_url = base_url
        import openai

        connect = min(connect_timeout, timeout)
        self._blocking_timeout = openai.Timeout(blocking_timeout, connect=connect)
        self._sdk = openai.OpenAI(
            base_url=base_url,
            api_key=api_key,
            timeout=openai.Timeout(timeout, connect=connect),
            max_retries=max_retries,
        )
        # The SDK sends, authenticates, retries and raises as usual; we read the JSON body
        # ourselves instead of building its pydantic ``Response`` model, which cost about a
        # third of each call's CPU (BENCHMARKS.md, figure 1).
        self._responses = self._sdk.responses.with_raw_response

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
                raw = self._responses.create(
                    **params, extra_headers=headers, timeout=self._blocking_timeout
                )
            else:
                raw = self._responses.create(**params, extra_headers=headers)
        except openai.OpenAIError as exc:
            raise translate_error(exc, reading=False) from exc
        return _parse_raw(raw)

    def retrieve(self, response_id: str) -> ProviderResponse:
        """Read a response by id."""
        import openai

        try:
            raw = self._responses.retrieve(response_id)
        except openai.OpenAIError as exc:
            raise translate_error(exc, reading=True) from exc
        return _parse_raw(raw)

    def cancel(self, response_id: str) -> ProviderResponse:
        """Cancel a background response; raises ``RequestRejected`` where there is no cancel."""
        import openai

        try:
            raw = self._responses.cancel(response_id)
        except openai.OpenAIError as exc:
            raise translate_error(exc, reading=False) from exc
        return _parse_raw(raw)

    def close(self) -> None:
        self._sdk.close()


def _parse_raw(raw: Any) -> ProviderResponse:
    """Parse the body of an SDK raw response; a body that is not a response object is a
    provider fault (retried like a 5xx), not a crash."""
    try:
        data = json.loads(raw.content)
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            raise ValueError("not a response object")
        return parse_response(data)
    except (ValueError, TypeError, AttributeError) as exc:
        raise errors.ProviderUnavailable(
            f"the provider answered {raw.status_code} with an unreadable body ({exc})"
        ) from exc


def parse_response(data: dict[str, Any]) -> ProviderResponse:
    """Reduce a Responses API ``response`` object (JSON) to a :class:`ProviderResponse`
    (full detail if terminal)."""
    status = str(data.get("status") or "")
    if status not in _TERMINAL:
        return ProviderResponse(id=data["id"], status=status, served_tier=data.get("service_tier"))
    items = [item for item in data.get("output") or [] if isinstance(item, dict)]
    truncated = any(
        item.get("type") == "message" and item.get("status") == "incomplete" for item in items
    )
    error = _object(data.get("error"), "message")
    incomplete = _object(data.get("incomplete_details"), "reason")
    return ProviderResponse(
        id=data["id"],
        status=status,
        output_text=output_text_of(items) or "",
        output=items,
        usage=_usage(data.get("usage")),
        served_tier=data.get("service_tier"),
        error_code=None if error is None else str(error.get("code") or "error"),
        error_message=None if error is None else str(error.get("message") or ""),
        incomplete_reason=None if incomplete is None else incomplete.get("reason"),
        truncated=truncated,
        created_at=_float(data.get("created_at")),
        completed_at=_float(data.get("completed_at")),
    )


def _object(value: Any, key: str) -> dict[str, Any] | None:
    """A nested object of the response; a bare string from a lax provider becomes ``{key: it}``."""
    if not value:
        return None
    return value if isinstance(value, dict) else {key: str(value)}


def _usage(usage: Any) -> Usage | None:
    if not isinstance(usage, dict):
        return None
    input_details = usage.get("input_tokens_details") or {}
    output_details = usage.get("output_tokens_details") or {}
    input_tokens = int(usage.get("input_tokens") or 0)
    output_tokens = int(usage.get("output_tokens") or 0)
    return Usage(
        input_tokens=input_tokens,
        cached_tokens=int(input_details.get("cached_tokens") or 0),
        output_tokens=output_tokens,
        reasoning_tokens=int(output_details.get("reasoning_tokens") or 0),
        total_tokens=int(usage.get("total_tokens") or (input_tokens + output_tokens)),
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


# -- webhooks ------------------------------------------------------------------------------

#: The ``response.*`` event types a flex job ends with (the ones a receiver acts on).
RESPONSE_EVENT_TYPES = (
    "response.completed",
    "response.failed",
    "response.cancelled",
    "response.incomplete",
)


class WebhookVerifier:
    """Verifies webhook deliveries with the ``openai`` SDK's own ``verify_signature``
    (Standard Webhooks: ``webhook-id``, ``webhook-timestamp``, ``webhook-signature``).

    ``secret`` is the endpoint's ``whsec_...`` secret; None lets the SDK read
    ``OPENAI_WEBHOOK_SECRET``. ``tolerance`` is the replay window in seconds, both ways.
    """

    def __init__(self, secret: str | None, *, tolerance: int = 300) -> None:
        import openai

        # Never sends a request: only its webhook helpers are used.
        self._sdk = openai.OpenAI(
            api_key="unused-by-webhooks", base_url="http://127.0.0.1:9/v1", webhook_secret=secret
        )
        if not self._sdk.webhook_secret:
            raise errors.ConfigurationError(
                "bad setting: webhooks need a secret: set FLEXPIPE_WEBHOOK_SECRET (or "
                "OPENAI_WEBHOOK_SECRET) to the endpoint's whsec_... secret"
            )
        self._tolerance = tolerance

    def verify(self, body: bytes, headers: Any) -> WebhookEvent:
        """The event in ``body``, if its signature and timestamp verify; else raises
        :class:`~flexpipe.errors.InvalidWebhook` (nothing about the event is trusted)."""
        import openai

        try:
            self._sdk.webhooks.verify_signature(body, headers, tolerance=self._tolerance)
        except openai.InvalidWebhookSignatureError as exc:
            raise errors.InvalidWebhook(f"webhook refused: {exc}") from None
        except ValueError as exc:  # a missing header
            raise errors.InvalidWebhook(f"webhook refused: {exc}") from None
        try:
            data = json.loads(body)
            webhook_id = str(_header(headers, "webhook-id"))
            inner = data.get("data") or {}
            return WebhookEvent(
                webhook_id=webhook_id,
                event_id=str(data.get("id") or ""),
                type=str(data["type"]),
                object_id=str(inner["id"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise errors.InvalidWebhook(f"webhook refused: not an event ({exc})") from None


def _header(headers: Any, name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name:
            return str(value)
    raise KeyError(name)


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    """A webhook endpoint registered with the provider; ``secret`` only when just created."""

    id: str
    url: str
    event_types: tuple[str, ...]
    secret: str | None = None


def register_webhook_endpoint(
    base_url: str,
    api_key: str,
    url: str,
    *,
    name: str = "flexpipe",
    event_types: tuple[str, ...] = RESPONSE_EVENT_TYPES,
) -> WebhookEndpoint:
    """Register ``url`` for ``event_types`` (``client.webhooks.create``); the endpoint's
    secret comes back once, in the result."""
    import openai

    sdk = openai.OpenAI(base_url=base_url, api_key=api_key)
    try:
        made = sdk.webhooks.create(event_types=list(event_types), name=name, url=url)  # type: ignore[arg-type]
    except openai.OpenAIError as exc:
        raise translate_error(exc, reading=False) from exc
    finally:
        sdk.close()
    return WebhookEndpoint(made.id, made.url, tuple(made.event_types), made.signing_secret)


def list_webhook_endpoints(base_url: str, api_key: str) -> list[WebhookEndpoint]:
    """The provider's webhook endpoints for this project (``client.webhooks.list``)."""
    import openai

    sdk = openai.OpenAI(base_url=base_url, api_key=api_key)
    try:
        return [
            WebhookEndpoint(e.id, e.url, tuple(e.event_types)) for e in sdk.webhooks.list()
        ]
    except openai.OpenAIError as exc:
        raise translate_error(exc, reading=True) from exc
    finally:
        sdk.close()


def delete_webhook_endpoint(base_url: str, api_key: str, endpoint_id: str) -> None:
    """Remove a webhook endpoint (``client.webhooks.delete``)."""
    import openai

    sdk = openai.OpenAI(base_url=base_url, api_key=api_key)
    try:
        sdk.webhooks.delete(endpoint_id)
    except openai.OpenAIError as exc:
        raise translate_error(exc, reading=False) from exc
    finally:
        sdk.close()
