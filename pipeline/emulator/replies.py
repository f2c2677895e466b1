"""HTTP plumbing shared by the handlers: answers per flavour, injected faults, dropping.

Doubleword answers 401/404/410 on GET and DELETE in ``text/plain``; everything else is the
JSON error envelope.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from flexpipe.emulator.objects import dumps, error_body
from flexpipe.emulator.service import Emulator

EMULATOR = web.AppKey("emulator", Emulator)


class Dropped(Exception):
    """Raised by a handler to close the connection without answering (drop fault)."""


def emulator(request: web.Request) -> Emulator:
    return request.app[EMULATOR]


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=dumps(data), status=status, content_type="application/json", headers=headers
    )


def json_error(
    status: int,
    message: str,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: Any = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    return json_response(error_body(message, type_, param, code), status, headers)


def text_error(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text, content_type="text/plain")


def not_found(emu: Emulator, response_id: str) -> web.Response:
    if emu.config.flavor == "doubleword":
        return text_error(404, f"response with ID {response_id} not found")
    return json_error(404, f"Response with id '{response_id}' not found.")


def injected(emu: Emulator, prefix: str) -> web.Response | None:
    """An injected error answer for ``create``/``get``, or ``None``; may raise Dropped."""
    faults = emu.faults
    if faults.roll("drop_rate"):
        emu.stats.bump("dropped")
        raise Dropped()
    if prefix == "create" and faults.roll("create_429_no_retry_after_rate"):
        emu.stats.bump("injected_errors")
        return json_error(
            429,
            "Unverified accounts can submit at most 1000 request(s) per 1h completion window. "
            "Verify your account to raise this limit.",
        )
    if faults.roll(f"{prefix}_429_rate"):
        emu.stats.bump("injected_errors")
        message = (
            "Resource Unavailable: flex processing capacity is exhausted, please retry "
            "later or use another service tier."
            if prefix == "create"
            else "Rate limit reached for requests. Please try again later."
        )
        return json_error(
            429,
            message,
            "rate_limit_error" if prefix == "get" else "invalid_request_error",
            None,
            "rate_limit_exceeded",
            faults.retry_headers(),
        )
    if faults.roll(f"{prefix}_5xx_rate"):
        emu.stats.bump("injected_errors")
        status = faults.error_status()
        return json_error(
            status,
            "The server had an error while processing your request.",
            "server_error",
            None,
            None,
            faults.retry_headers(),
        )
    return None


def unauthorized(emu: Emulator, request: web.Request, missing: bool) -> web.Response:
    if emu.config.flavor == "doubleword":
        if request.method in ("GET", "DELETE"):
            return text_error(401, "Authentication required")
        return json_error(401, "API key required" if missing else "Invalid API key")
    if missing:
        return json_error(
            401,
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        )
    return json_error(401, "Incorrect API key provided.", code="invalid_api_key")
