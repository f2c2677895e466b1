"""The Batches endpoints: create, list, retrieve, cancel (``/v1/batches``).

The lifecycle and line processing live in :mod:`flexpipe.emulator.batchqueue`; the files a
batch reads and writes in :mod:`flexpipe.emulator.filestore` (served by ``files``).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from flexpipe.emulator.batchqueue import ENDPOINTS, Batch, parse_window
from flexpipe.emulator.replies import emulator, json_error, json_response, text_error
from flexpipe.emulator.responses import _bad_request, read_json
from flexpipe.emulator.service import Emulator
from flexpipe.emulator.validation import InvalidRequest
from flexpipe.emulator.validation import _check_metadata as check_metadata


def batch_not_found(emu: Emulator, batch_id: str) -> web.Response:
    if emu.config.flavor == "doubleword":
        return text_error(404, f"Batch with ID {batch_id} not found")
    return json_error(404, f"No batch found with id '{batch_id}'.", param="batch_id")


def _validate(emu: Emulator, body: Any) -> tuple[str, str, str, dict[str, str] | None]:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    for name in ("input_file_id", "endpoint", "completion_window"):
        if not isinstance(body.get(name), str):
            raise InvalidRequest(
                f"Missing required parameter: '{name}'.", name, code="missing_required_parameter"
            )
    file_id, endpoint, window = body["input_file_id"], body["endpoint"], body["completion_window"]
    if endpoint not in ENDPOINTS:
        raise InvalidRequest(
            f"Invalid value for 'endpoint': {endpoint!r}; this server batches {list(ENDPOINTS)}.",
            "endpoint",
        )
    if parse_window(emu.config.flavor, window) is None:
        allowed = "'24h'" if emu.config.flavor == "openai" else "'24h' or '1h'"
        raise InvalidRequest(
            f"Invalid value for 'completion_window': {window!r}; use {allowed}.",
            "completion_window",
        )
    check_metadata(body)
    file = emu.files.get(file_id)
    if file is None or file.data is None:
        raise InvalidRequest(f"No such File object: {file_id}", "input_file_id")
    if file.purpose != "batch":
        raise InvalidRequest(
            f"File {file_id} was not uploaded with purpose 'batch'.", "input_file_id"
        )
    return file_id, endpoint, window, body.get("metadata")


async def create(request: web.Request) -> web.Response:
    emu = emulator(request)
    try:
        body = await read_json(request)
        file_id, endpoint, window, metadata = _validate(emu, body)
    except InvalidRequest as exc:
        return _bad_request(exc)
    file = emu.files.get(file_id)
    assert file is not None
    batch = emu.batches.create(file, endpoint, window, metadata)
    return json_response(batch.as_object(emu.config.flavor))


def _batch(emu: Emulator, request: web.Request) -> Batch | web.Response:
    bid = request.match_info["id"]
    batch = emu.batches.get(bid)
    return batch if batch is not None else batch_not_found(emu, bid)


async def retrieve(request: web.Request) -> web.Response:
    emu = emulator(request)
    batch = _batch(emu, request)
    if isinstance(batch, web.Response):
        return batch
    batch.retrieves += 1
    emu.stats.bump("batch_retrieves")
    return json_response(batch.as_object(emu.config.flavor))


async def cancel(request: web.Request) -> web.Response:
    emu = emulator(request)
    batch = _batch(emu, request)
    if isinstance(batch, web.Response):
        return batch
    if not emu.batches.cancel(batch):
        return json_error(
            409 if emu.config.flavor == "openai" else 400,
            f"Cannot cancel a batch with status '{batch.status}'.",
        )
    return json_response(batch.as_object(emu.config.flavor))


async def list_batches(request: web.Request) -> web.Response:
    emu = emulator(request)
    try:
        limit = max(1, min(100, int(request.query.get("limit", "20"))))
    except ValueError:
        return json_error(400, "Invalid 'limit': expected an integer.", param="limit")
    batches = list(reversed(emu.batches.batches.values()))
    after = request.query.get("after")
    if after is not None:
        ids = [b.id for b in batches]
        batches = batches[ids.index(after) + 1 :] if after in ids else []
    page = batches[:limit]
    flavor = emu.config.flavor
    return json_response(
        {
            "object": "list",
            "data": [b.as_object(flavor) for b in page],
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
            "has_more": len(batches) > limit,
        }
    )


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/batches", create)
    app.router.add_get("/v1/batches", list_batches)
    app.router.add_get("/v1/batches/{id}", retrieve)
    app.router.add_post("/v1/batches/{id}/cancel", cancel)
