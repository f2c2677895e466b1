"""The aiohttp application: routes, auth, request counting and ``x-request-id``.

One middleware does the per-request work (retry-count logging, auth of ``/v1`` and of the
admin routes, the body-size limit, slow fault, drops, counting by route template and status);
a response-prepare hook stamps ``x-request-id`` on every answer, streamed ones included.
Nothing is logged per request unless ``access_log`` is on.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable

from aiohttp import web

from flexpipe.emulator import admin, batches, chat, files, responses
from flexpipe.emulator.auth import ADMIN_PREFIX, admin_key, bearer_matches
from flexpipe.emulator.config import EmulatorConfig
from flexpipe.emulator.replies import (
    EMULATOR,
    Dropped,
    json_error,
    json_response,
    unauthorized,
)
from flexpipe.emulator.service import Emulator

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _route_label(request: web.Request) -> str:
    route = request.match_info.route
    resource = route.resource
    path = resource.canonical if resource is not None else "<unmatched>"
    return f"{request.method} {path}"


@web.middleware
async def _middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    emu = request.app[EMULATOR]
    label = _route_label(request)
    retry = request.headers.get("x-stainless-retry-count")
    if retry is not None and retry != "0":
        emu.stats.bump("retries_seen")
    api = request.path.startswith("/v1/")
    key = emu.config.api_key
    if api and key is not None:
        auth = request.headers.get("Authorization", "")
        if not bearer_matches(auth, key):
            denied = unauthorized(emu, request, missing=not auth)
            emu.stats.count(label, denied.status)
            return denied
    elif request.path.startswith(ADMIN_PREFIX):
        required = admin_key(emu.config)
        auth = request.headers.get("Authorization", "")
        if required is not None and not bearer_matches(auth, required):
            emu.stats.count(label, 401)
            return json_error(401, "Admin routes need 'Authorization: Bearer <admin key>'.")
    size = request.content_length
    if size is not None and size > emu.config.max_body_bytes:
        emu.stats.count(label, 413)
        return _too_large(emu)
    if api and emu.faults.config.slow_ms:
        await asyncio.sleep(emu.faults.config.slow_ms / 1000.0)
    try:
        resp = await handler(request)
    except Dropped:
        emu.stats.count(label, "dropped")
        transport = request.transport
        if transport is not None:
            transport.abort()
        raise asyncio.CancelledError() from None
    except web.HTTPRequestEntityTooLarge:  # a chunked body went past client_max_size
        emu.stats.count(label, 413)
        return _too_large(emu)
    except web.HTTPException as exc:
        emu.stats.count(label, exc.status)
        raise
    emu.stats.count(label, resp.status)
    return resp


def _too_large(emu: Emulator) -> web.Response:
    return json_error(
        413,
        f"Request body too large: the limit is {emu.config.max_body_bytes} bytes.",
        code="request_too_large",
    )


async def _stamp_request_id(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["x-request-id"] = "req_" + os.urandom(16).hex()


async def _health(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def _models(request: web.Request) -> web.Response:
    emu = request.app[EMULATOR]
    data = [
        {"id": m, "object": "model", "created": int(emu.started_at), "owned_by": "flexpipe"}
        for m in emu.config.models
    ]
    return json_response({"object": "list", "data": data})


async def _model(request: web.Request) -> web.Response:
    emu = request.app[EMULATOR]
    name = request.match_info["name"]
    if name not in emu.config.models:
        return json_response(
            {
                "error": {
                    "message": f"The model '{name}' does not exist",
                    "type": "invalid_request_error",
                    "param": "model",
                    "code": "model_not_found",
                }
            },
            404,
        )
    return json_response(
        {"id": name, "object": "model", "created": int(emu.started_at), "owned_by": "flexpipe"}
    )


async def _on_cleanup(app: web.Application) -> None:
    emu = app[EMULATOR]
    emu.scheduler.reset()
    await emu.webhooks.close()
    if emu.upstream is not None:
        await emu.upstream.close()


def build_app(config: EmulatorConfig | None = None) -> web.Application:
    """The emulator as an aiohttp application (serve it with any aiohttp runner)."""
    config = config or EmulatorConfig()
    logging.getLogger("flexpipe.emulator").setLevel(config.log_level.upper())
    app = web.Application(middlewares=[_middleware], client_max_size=config.max_body_bytes)
    app[EMULATOR] = Emulator(config)
    app.on_response_prepare.append(_stamp_request_id)
    app.on_cleanup.append(_on_cleanup)
    app.router.add_get("/health", _health)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/v1/models/{name:.+}", _model)
    responses.add_routes(app, config.flavor)
    app.router.add_post("/v1/chat/completions", chat.chat_completions)
    files.add_routes(app)
    batches.add_routes(app)
    admin.add_routes(app)
    return app


def emulator_of(app: web.Application) -> Emulator:
    """The :class:`Emulator` behind an application built by :func:`build_app`."""
    return app[EMULATOR]
