"""The Responses endpoints: create, retrieve (with SSE replay), cancel, delete."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web

from flexpipe.emulator.objects import (
    dumps,
    dw_create_body,
    dw_object,
    get_body,
    openai_object,
    sse,
    stream_events,
)
from flexpipe.emulator.records import Record
from flexpipe.emulator.replies import (
    Dropped,
    emulator,
    injected,
    json_error,
    json_response,
    not_found,
    text_error,
)
from flexpipe.emulator.service import Emulator
from flexpipe.emulator.validation import InvalidRequest, validate_create


async def read_json(request: web.Request) -> Any:
    raw = await request.read()
    try:
        return json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly.)"
        ) from exc


def _bad_request(exc: InvalidRequest) -> web.Response:
    return json_error(exc.status, exc.message, "invalid_request_error", exc.param, exc.code)


async def wait_terminal(emu: Emulator, rec: Record) -> bool:
    """Hold until ``rec`` is terminal or ``max_hold_s`` (scaled) passes; ``True`` if terminal."""
    if rec.terminal:
        return True
    try:
        await asyncio.wait_for(rec.wait_future(), emu.config.scaled(emu.config.max_hold_s))
    except TimeoutError:
        return False
    return rec.terminal


def hold_timeout(emu: Emulator) -> web.Response:
    return json_error(
        504,
        f"Request timed out: no result within {emu.config.max_hold_s:g}s "
        "(poll the response id instead)",
        "server_error",
    )


async def create(request: web.Request) -> web.StreamResponse:
    emu = emulator(request)
    try:
        body = await read_json(request)
        fault = injected(emu, "create")
        if fault is not None:
            return fault
        validate_create(emu.config, body)
    except InvalidRequest as exc:
        return _bad_request(exc)
    previous = None
    prev_id = body.get("previous_response_id")
    if prev_id is not None:
        previous = emu.store.get(str(prev_id), lenient_prefix=emu.config.flavor == "doubleword")
        if previous is None:
            return json_error(
                400, f"previous response not found: {prev_id}", param="previous_response_id"
            )
    key = request.headers.get("Idempotency-Key")
    rec = emu.store.by_idempotency_key(key) if key and emu.config.idempotency_replay else None
    if rec is not None:
        emu.stats.bump("idempotent_replays")
    else:
        rec = emu.create(body, key, previous)
    if rec.stream:
        return await stream(request, emu, rec, -1)
    if rec.background:
        if emu.config.flavor == "openai":
            shown = "queued" if not rec.terminal else None
            return json_response(openai_object(rec, shown, pending=shown is not None))
        return json_response(dw_create_body(rec), 202)
    if not await wait_terminal(emu, rec):
        return hold_timeout(emu)
    return blocking_answer(emu, rec)


def blocking_answer(emu: Emulator, rec: Record) -> web.Response:
    if not rec.terminal:  # woken by a reset: the "restarted" server never answers
        raise Dropped()
    if emu.config.flavor == "openai":
        if rec.status == "failed":
            code = rec.error[0] if rec.error else 500
            message = rec.error[1] if rec.error else "failed"
            return json_error(
                code if code >= 400 else 500, message, "server_error", code="server_error"
            )
        return web.Response(body=get_body(rec, "openai"), content_type="application/json")
    obj = dw_object(rec)
    status = 200 if obj["status"] == "completed" else int((rec.error or (500, ""))[0])
    if obj["status"] == "cancelled":
        status = 499
    return json_response(obj, status)


async def stream(
    request: web.Request, emu: Emulator, rec: Record, after: int
) -> web.StreamResponse:
    """SSE of ``rec``: the events so far, then (once terminal) the rest; ``after`` skips."""
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await resp.prepare(request)
    flavor = emu.config.flavor
    sent = 0
    for ev in stream_events(rec, flavor):
        sent += 1
        if ev["sequence_number"] > after:
            await resp.write(sse(ev))
    if not await wait_terminal(emu, rec):
        ev = {
            "type": "error",
            "code": "timeout",
            "param": None,
            "sequence_number": sent,
            "message": f"Request timed out: no result within {emu.config.max_hold_s:g}s",
        }
        await resp.write(sse(ev))
    else:
        for ev in stream_events(rec, flavor)[sent:]:
            if ev["sequence_number"] > after:
                await resp.write(sse(ev))
    await resp.write_eof()
    return resp


async def retrieve(request: web.Request) -> web.StreamResponse:
    emu = emulator(request)
    fault = injected(emu, "get")
    if fault is not None:
        return fault
    rid = request.match_info["id"]
    rec = emu.store.get(rid, lenient_prefix=emu.config.flavor == "doubleword")
    if rec is None:
        return not_found(emu, rid)
    cfg = emu.faults.config
    if cfg.read_lag_ms and (time.time() - rec.created_at) * 1000.0 < cfg.read_lag_ms:
        return not_found(emu, rid)
    if rec.read_done:
        return text_error(
            410,
            f"zdr_request_unavailable: response {rec.id} was deleted after "
            "its first retrieval (zero data retention)",
        )
    query = request.query
    if query.get("stream") in ("true", "1", "True"):
        try:
            after = int(query.get("starting_after", "-1"))
        except ValueError:
            return json_error(
                400, "Invalid 'starting_after': expected an integer.", param="starting_after"
            )
        rec.polls += 1
        emu.stats.bump("polls")
        return await stream(request, emu, rec, after)
    rec.polls += 1
    emu.stats.bump("polls")
    if cfg.read_once and rec.terminal:
        rec.read_done = True
    return web.Response(body=get_body(rec, emu.config.flavor), content_type="application/json")


async def cancel(request: web.Request) -> web.Response:
    emu = emulator(request)
    rid = request.match_info["id"]
    rec = emu.store.get(rid)
    if rec is None:
        return not_found(emu, rid)
    if not rec.background:
        return json_error(400, "Cannot cancel a synchronous response.")
    if (
        not emu.scheduler.cancel(rec)
        and rec.status != "cancelled"
        and (emu.config.cancel_terminal_400)
    ):
        return json_error(400, f"Cannot cancel a response with status '{rec.status}'.")
    return web.Response(body=get_body(rec, "openai"), content_type="application/json")


async def delete(request: web.Request) -> web.Response:
    emu = emulator(request)
    rid = request.match_info["id"]
    rec = emu.store.get(rid, lenient_prefix=emu.config.flavor == "doubleword")
    if rec is None:
        return not_found(emu, rid)
    emu.scheduler.abandon(rec)
    rec.deleted = True
    emu.store.schedule_expiry(rec, asyncio.get_running_loop().time())
    emu.stats.bump("deleted")
    return web.Response(
        body=dumps({"id": rec.id, "object": "response", "deleted": True}),
        content_type="application/json",
    )


def add_routes(app: web.Application, flavor: str) -> None:
    app.router.add_post("/v1/responses", create)
    app.router.add_get("/v1/responses/{id}", retrieve)
    app.router.add_delete("/v1/responses/{id}", delete)
    if flavor == "openai":
        app.router.add_post("/v1/responses/{id}/cancel", cancel)
