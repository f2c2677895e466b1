"""Admin endpoints under ``/_emulator`` (no auth): faults, stats, per-id stats, reset.

``GET /_emulator/faults`` returns the knobs; ``POST`` merges a JSON object into them.
``GET /_emulator/stats[?responses=0]`` returns request counts per endpoint and status,
totals, and (unless ``responses=0``) per-id counters; ``GET /_emulator/responses/{id}`` one
id's counters; ``POST /_emulator/reset`` forgets every response and all stats.
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


async def reset(request: web.Request) -> web.Response:
    emulator(request).reset()
    return json_response({"status": "reset"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/_emulator/faults", get_faults)
    app.router.add_post("/_emulator/faults", set_faults)
    app.router.add_get("/_emulator/stats", stats)
    app.router.add_get("/_emulator/responses/{id}", response_stats)
    app.router.add_post("/_emulator/reset", reset)
