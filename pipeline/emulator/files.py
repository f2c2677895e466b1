"""The Files endpoints: upload (multipart), list, retrieve, delete, and content.

``GET /v1/files/{id}/content`` streams the file. In the doubleword flavour a batch's output
or error file can be read while the batch runs: ``?offset=N`` skips the first N lines, and the
answer carries ``X-Incomplete: true|false`` (whether more lines may come) and
``X-Last-Line: M`` (the offset to resume from).
"""

from __future__ import annotations

from itertools import islice

from aiohttp import BodyPartReader, web

from flexpipe.emulator.filestore import PURPOSES, File, new_file_id
from flexpipe.emulator.replies import emulator, json_error, json_response, text_error
from flexpipe.emulator.service import Emulator

#: Lines per write when streaming a result file.
_LINES_PER_WRITE = 1000
#: Bytes per write when streaming an uploaded file.
_BYTES_PER_WRITE = 1 << 20


def file_not_found(emu: Emulator, file_id: str) -> web.Response:
    if emu.config.flavor == "doubleword":
        return text_error(404, f"File with ID {file_id} not found")
    return json_error(404, f"No such File object: {file_id}", param="id")


def _injected(emu: Emulator) -> web.Response | None:
    faults = emu.faults
    if faults.roll("upload_429_rate"):
        emu.stats.bump("injected_errors")
        return json_error(
            429,
            "Rate limit reached for file uploads. Please try again later.",
            "rate_limit_error",
            code="rate_limit_exceeded",
            headers=faults.retry_headers(),
        )
    if faults.roll("upload_5xx_rate"):
        emu.stats.bump("injected_errors")
        return json_error(
            faults.error_status(),
            "The server had an error while processing your request.",
            "server_error",
            headers=faults.retry_headers(),
        )
    return None


async def upload(request: web.Request) -> web.Response:
    emu = emulator(request)
    fault = _injected(emu)
    if fault is not None:
        return fault
    if not request.content_type.startswith("multipart/"):
        return json_error(400, "Expected a multipart/form-data body with 'file' and 'purpose'.")
    limit = emu.config.max_file_bytes
    reader = await request.multipart()
    purpose: str | None = None
    filename = "upload.jsonl"
    data: bytearray | None = None
    too_big = False
    while True:
        part = await reader.next()
        if part is None:
            break
        if not isinstance(part, BodyPartReader):
            continue
        if part.name == "purpose":
            purpose = (await part.text()).strip()
        elif part.name == "file":
            filename = part.filename or filename
            data = bytearray()
            while chunk := await part.read_chunk(_BYTES_PER_WRITE):
                if not too_big and len(data) + len(chunk) > limit:
                    too_big, data = True, bytearray()
                if not too_big:
                    data += chunk
        else:
            await part.release()
    if too_big:
        return json_error(
            413,
            f"File is too large: the maximum size is {limit} bytes.",
            param="file",
            code="file_too_large",
        )
    if data is None:
        return json_error(
            400,
            "Missing required parameter: 'file'.",
            param="file",
            code="missing_required_parameter",
        )
    if purpose is None:
        return json_error(
            400,
            "Missing required parameter: 'purpose'.",
            param="purpose",
            code="missing_required_parameter",
        )
    if purpose not in PURPOSES:
        return json_error(
            400,
            f"Invalid value for 'purpose': {purpose!r}; use one of {sorted(PURPOSES)}.",
            param="purpose",
        )
    file = emu.files.add(File(new_file_id(emu.config.flavor), filename, purpose, data))
    emu.stats.bump("file_uploads")
    return json_response(file.as_object(), 201 if emu.config.flavor == "doubleword" else 200)


async def list_files(request: web.Request) -> web.Response:
    emu = emulator(request)
    query = request.query
    purpose = query.get("purpose")
    try:
        limit = max(1, min(10_000, int(query.get("limit", "10000"))))
    except ValueError:
        return json_error(400, "Invalid 'limit': expected an integer.", param="limit")
    files = [f for f in emu.files.files.values() if purpose is None or f.purpose == purpose]
    if query.get("order", "desc") != "asc":
        files.reverse()
    after = query.get("after")
    if after is not None:
        ids = [f.id for f in files]
        files = files[ids.index(after) + 1 :] if after in ids else []
    page = files[:limit]
    data = [f.as_object() for f in page]
    return json_response(
        {
            "object": "list",
            "data": data,
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
            "has_more": len(files) > limit,
        }
    )


async def retrieve(request: web.Request) -> web.Response:
    emu = emulator(request)
    fid = request.match_info["id"]
    file = emu.files.get(fid)
    if file is None:
        return file_not_found(emu, fid)
    return json_response(file.as_object())


async def delete(request: web.Request) -> web.Response:
    emu = emulator(request)
    fid = request.match_info["id"]
    if not emu.files.delete(fid):
        return file_not_found(emu, fid)
    emu.stats.bump("files_deleted")
    return json_response({"id": fid, "object": "file", "deleted": True})


async def content(request: web.Request) -> web.StreamResponse:
    emu = emulator(request)
    fid = request.match_info["id"]
    file = emu.files.get(fid)
    if file is None:
        return file_not_found(emu, fid)
    doubleword = emu.config.flavor == "doubleword"
    offset = 0
    if doubleword and "offset" in request.query:
        try:
            offset = int(request.query["offset"])
        except ValueError:
            offset = -1
        if offset < 0:
            return json_error(400, "Invalid 'offset': expected an integer >= 0.", param="offset")
    file.downloads += 1
    emu.stats.bump("content_downloads")
    if file.data is not None:
        return await _stream_bytes(request, file, doubleword)
    return await _stream_lines(request, file, offset, doubleword)


async def _stream_bytes(request: web.Request, file: File, doubleword: bool) -> web.StreamResponse:
    data = file.data
    assert data is not None
    resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    if doubleword:
        resp.headers["X-Incomplete"] = "false"
    resp.content_length = len(data)
    await resp.prepare(request)
    view = memoryview(data)
    for pos in range(0, len(data), _BYTES_PER_WRITE):
        await resp.write(view[pos : pos + _BYTES_PER_WRITE])
    await resp.write_eof()
    return resp


async def _stream_lines(
    request: web.Request, file: File, offset: int, doubleword: bool
) -> web.StreamResponse:
    lines = file.lines
    end = len(lines)  # a snapshot: lines only ever get appended
    start = min(offset, end)
    headers = {"Content-Type": "application/x-ndjson" if doubleword else "application/octet-stream"}
    if doubleword:
        headers["X-Incomplete"] = "false" if file.complete else "true"
        headers["X-Last-Line"] = str(max(offset, end))
    resp = web.StreamResponse(headers=headers)
    resp.content_length = sum(map(len, islice(lines, start, end)))
    await resp.prepare(request)
    for pos in range(start, end, _LINES_PER_WRITE):
        await resp.write(b"".join(lines[pos : min(end, pos + _LINES_PER_WRITE)]))
    await resp.write_eof()
    return resp


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/files", upload)
    app.router.add_get("/v1/files", list_files)
    app.router.add_get("/v1/files/{id}", retrieve)
    app.router.add_delete("/v1/files/{id}", delete)
    app.router.add_get("/v1/files/{id}/content", content)
