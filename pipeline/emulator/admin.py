"""Admin endpoints under ``/_emulator``: faults, stats, per-id stats, webhooks, reset.

They need ``Authorization: Bearer`` with the admin key, or the API key when no admin key is
set (:mod:`flexpipe.emulator.auth`).

``GET /_emulator/faults`` returns the knobs; ``POST`` merges a JSON object into them.
``GET /_emulator/stats[?responses=0]`` returns request counts per endpoint and status,
totals, and (unless ``responses=0``) per-id counters; ``GET /_emulator/responses/{id}`` one
id's counters; ``GET /_emulator/webhooks`` the receiver URLs (never the secret), ``POST``
``{"urls": [...], "secret": "whsec_..."}`` replaces them (either key may be left out);
``POST /_emulator/reset`` forgets every response, pending webhook and all stats.
"""

from __future__ import annotations

from aiohttp import web

from flexpipe.emulator.replies import emulator, json_error, json_response
from flexpipe.emulator.responses import read_json
from flexpipe.emulator.validation import InvalidRequest


async def get_faults(request: web.Request) -> web.Response:
    return json_response(emulator(request).faults.config.as_dict())


async def set_faults(request: web.Request) -> web.Response:
    emu = emulator(request)
    try:
        body = await read_json(request)
    except InvalidRequest as exc:
        return json_error(400, exc.message)
    if not isinstance(body, dict):
        return json_error(400, "expected a JSON object of fault knobs")
    try:
        emu.faults.update(body)
    except (ValueError, TypeError) as exc:
        return json_error(400, str(exc))
    return json_response(emu.faults.config.as_dict())


async def stats(request: web.Request) -> web.Response:
    include = request.query.get("responses", "1") not in ("0", "false", "no")
    return json_response(emulator(request).stats_snapshot(include_responses=include))


async def response_stats(request: web.Request) -> web.Response:
    emu = emulator(request)
    rid = request.match_info["id"]
    rec = emu.store.records.get(rid)
    if rec is None:
        return json_error(404, f"no stats for {rid}")
    return json_response({"id": rid, **rec.stats()})


def _webhooks_body(request: web.Request) -> dict[str, object]:
    sender = emulator(request).webhooks
    return {"urls": list(sender.urls), "secret_set": sender.secret_set}


async def get_webhooks(request: web.Request) -> web.Response:
    return json_response(_webhooks_body(request))


async def set_webhooks(request: web.Request) -> web.Response:
    try:
        body = await read_json(request)
    except InvalidRequest as exc:
        return json_error(400, exc.message)
    if not isinstance(body, dict) or set(body) - {"urls", "secret"}:
        return json_error(400, 'expected {"urls": [...], "secret": "whsec_..."}')
    urls = body.get("urls")
    secret = body.get("secret")
    if urls is not None and (
        not isinstance(urls, list) or not all(isinstance(u, str) for u in urls)
    ):
        return json_error(400, "urls: expected a list of strings", param="urls")
    if secret is not None and not isinstance(secret, str):
        return json_error(400, "secret: expected a string", param="secret")
    try:
        emulator(request).webhooks.configure(urls, secret)
    except ValueError as exc:
        return json_error(400, str(exc))
    return json_response(_webhooks_body(request))


async def reset(request: web.Request) -> web.Response:
    emulator(request).reset()
    return json_response({"status": "reset"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/_emulator/faults", get_faults)
    app.router.add_post("/_emulator/faults", set_faults)
    app.router.add_get("/_emulator/stats", stats)
    app.router.add_get("/_emulator/responses/{id}", response_stats)
    app.router.add_get("/_emulator/webhooks", get_webhooks)
    app.router.add_post("/_emulator/webhooks", set_webhooks)
    app.router.add_post("/_emulator/reset", reset)
