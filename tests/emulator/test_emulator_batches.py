"""Contract tests of the batch tier (``/v1/files`` + ``/v1/batches``) through the openai SDK."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest
from jsonschema import Draft202012Validator
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from flexpipe.emulator import EmulatorHandle
from flexpipe.emulator.outputs import generate, messages_from_input
from tests.emulator.helpers import client, http, set_faults, stats
from tests.emulator.helpers import schema_errors as response_schema_errors

Start = Callable[..., EmulatorHandle]
TERMINAL = ("completed", "failed", "expired", "cancelled")
SCHEMAS = json.loads((Path(__file__).parent / "data" / "batch_schemas.json").read_text())

#: Batches that finish in a blink: lines all due at once, short validate/finalize.
QUICK: dict[str, Any] = {
    "batch_latency": "fixed:0",
    "batch_validate_s": 0.01,
    "batch_finalize_s": 0.01,
}


def schema_errors(name: str, obj: dict[str, Any]) -> list[str]:
    """Errors of ``obj`` against the OpenAPI schema ``name``; nulls count as absent."""
    schema = {**SCHEMAS, "$ref": f"#/components/schemas/{name}"}
    data = {k: v for k, v in obj.items() if v is not None}
    return [e.message for e in Draft202012Validator(schema).iter_errors(data)]


def line(i: int, endpoint: str = "/v1/responses", **body: Any) -> dict[str, Any]:
    text = f"Document {i} is about orchards. Apples and pears grow there in rows."
    if endpoint == "/v1/responses":
        payload: dict[str, Any] = {"model": "m", "input": text}
    else:
        payload = {"model": "m", "messages": [{"role": "user", "content": text}]}
    payload.update(body)
    return {"custom_id": f"item-{i}", "method": "POST", "url": endpoint, "body": payload}


def upload(c: openai.OpenAI, lines: list[dict[str, Any]]) -> str:
    data = "\n".join(json.dumps(x) for x in lines).encode()
    return c.files.create(file=("input.jsonl", data), purpose="batch").id


def wait(c: openai.OpenAI, batch_id: str, until: tuple[str, ...] = TERMINAL) -> Any:
    deadline = time.monotonic() + 30
    while True:
        batch = c.batches.retrieve(batch_id)
        if batch.status in until:
            return batch
        assert time.monotonic() < deadline, f"batch stuck in {batch.status}"
        time.sleep(0.01)


def jsonl(raw: bytes) -> list[dict[str, Any]]:
    return [json.loads(x) for x in raw.splitlines() if x.strip()]


def expected_text(item: dict[str, Any]) -> str:
    body = item["body"]
    messages = messages_from_input(body.get("input") or body.get("messages"))
    return generate(messages, None, None, 0).text


@pytest.mark.parametrize("flavor", ["doubleword", "openai"])
@pytest.mark.parametrize("endpoint", ["/v1/responses", "/v1/chat/completions"])
def test_batch_round_trip(start: Start, flavor: str, endpoint: str) -> None:
    emu = start(flavor=flavor, **QUICK)
    c = client(emu)
    items = [line(i, endpoint) for i in range(5)]
    file_id = upload(c, items)
    created = c.batches.create(
        input_file_id=file_id,
        endpoint=endpoint,  # type: ignore[arg-type]
        completion_window="24h",
        metadata={"bulk": "7"},
    )
    assert created.status == "validating"
    assert created.completion_window == ("Standard (24h)" if flavor == "doubleword" else "24h")
    assert not schema_errors("Batch", created.model_dump(mode="json"))
    if flavor == "openai":  # result files are named only once the batch has ended
        assert created.output_file_id is None
    else:  # allocated at create, so partial results can be read while it runs
        assert created.output_file_id and created.error_file_id

    done = wait(c, created.id)
    assert done.status == "completed"
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed) == (5, 5)
    assert done.request_counts.failed == 0
    assert done.metadata == {"bulk": "7"}
    assert done.in_progress_at and done.finalizing_at and done.completed_at
    assert not schema_errors("Batch", done.model_dump(mode="json"))
    assert done.output_file_id is not None

    out = jsonl(c.files.content(done.output_file_id).content)
    assert [o["custom_id"] for o in out] == [x["custom_id"] for x in items]
    for item, o in zip(items, out, strict=True):
        assert o["error"] is None and o["id"].startswith("batch_req_")
        assert o["response"]["status_code"] == 200
        assert o["response"]["request_id"].startswith("req_")
        body = o["response"]["body"]
        if endpoint == "/v1/responses":
            assert not response_schema_errors(body)
            assert Response.model_validate(body).output_text == expected_text(item)
        else:
            reply = ChatCompletion.model_validate(body)
            assert reply.choices[0].message.content == expected_text(item)

    snap = stats(emu)
    totals = snap["totals"]
    assert (totals["file_uploads"], totals["batch_creates"], totals["content_downloads"]) == (
        1,
        1,
        1,
    )
    assert totals["batch_lines_completed"] == 5 and totals["batches_completed"] == 1
    assert snap["files"][file_id]["batch_creates"] == 1
    assert snap["batches"][created.id]["creates"] == 1
    assert snap["batches"][created.id]["status"] == "completed"


def test_doubleword_partial_reads_with_offset(start: Start) -> None:
    """While running: X-Incomplete true; ?offset=N skips N lines; X-Last-Line resumes."""
    emu = start(flavor="doubleword", batch_latency="fixed:3600", batch_validate_s=0.01)
    c = client(emu)
    batch = c.batches.create(
        input_file_id=upload(c, [line(0), line(1)]),
        endpoint="/v1/responses",
        completion_window="1h",
    )
    assert batch.completion_window == "High (1h)"
    wait(c, batch.id, ("in_progress",))
    assert batch.output_file_id is not None
    raw = c.files.with_raw_response.content(batch.output_file_id)
    assert raw.headers["X-Incomplete"] == "true"
    assert raw.headers["X-Last-Line"] == "0"
    assert raw.content == b""
    cancelled = c.batches.cancel(batch.id)
    assert cancelled.status == "cancelling" and cancelled.cancelling_at
    assert wait(c, batch.id).status == "cancelled"
    raw = c.files.with_raw_response.content(batch.output_file_id)
    assert raw.headers["X-Incomplete"] == "false"

    quick = start(flavor="doubleword", **QUICK)
    c = client(quick)
    done = wait(
        c,
        c.batches.create(
            input_file_id=upload(c, [line(i) for i in range(6)]),
            endpoint="/v1/responses",
            completion_window="24h",
        ).id,
    )
    assert done.output_file_id is not None
    path = f"/v1/files/{done.output_file_id}/content"
    status, headers, body = http(quick, "GET", path + "?offset=4")
    assert status == 200
    assert [o["custom_id"] for o in jsonl(body)] == ["item-4", "item-5"]
    assert (headers["X-Incomplete"], headers["X-Last-Line"]) == ("false", "6")
    status, headers, body = http(quick, "GET", path + "?offset=9")
    assert (status, body, headers["X-Last-Line"]) == (200, b"", "9")
    status, _, _ = http(quick, "GET", path + "?offset=-1")
    assert status == 400


def test_expired_with_partial_results(start: Start) -> None:
    emu = start(flavor="openai", faults={"batch_expire_rate": 1.0}, **QUICK)
    c = client(emu)
    batch = wait(
        c,
        c.batches.create(
            input_file_id=upload(c, [line(i) for i in range(6)]),
            endpoint="/v1/responses",
            completion_window="24h",
        ).id,
    )
    assert batch.status == "expired" and batch.expired_at
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (3, 3)
    assert batch.output_file_id and batch.error_file_id
    done = jsonl(c.files.content(batch.output_file_id).content)
    expired = jsonl(c.files.content(batch.error_file_id).content)
    assert [o["custom_id"] for o in done] == ["item-0", "item-1", "item-2"]
    assert [o["custom_id"] for o in expired] == ["item-3", "item-4", "item-5"]
    assert all(o["response"] is None and o["error"]["code"] == "batch_expired" for o in expired)


def test_window_passing_expires_the_batch(start: Start) -> None:
    """A 24h window scaled to 86 ms closes before a 3600 s (3.6 s) batch is done."""
    emu = start(flavor="openai", time_scale=0.000001, batch_latency="fixed:3600000")
    c = client(emu)
    batch = c.batches.create(
        input_file_id=upload(c, [line(0)]), endpoint="/v1/responses", completion_window="24h"
    )
    done = wait(c, batch.id)
    assert done.status == "expired"
    assert done.request_counts is not None and done.request_counts.failed == 1


@pytest.mark.parametrize("flavor", ["doubleword", "openai"])
def test_line_errors_go_to_the_error_file(start: Start, flavor: str) -> None:
    emu = start(flavor=flavor, **QUICK)
    c = client(emu)
    items = [line(0), line(1), line(2)]
    del items[1]["body"]["model"]
    done = wait(
        c,
        c.batches.create(
            input_file_id=upload(c, items), endpoint="/v1/responses", completion_window="24h"
        ).id,
    )
    assert done.status == "completed"
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (2, 1)
    assert done.output_file_id and done.error_file_id
    assert len(jsonl(c.files.content(done.output_file_id).content)) == 2
    (err,) = jsonl(c.files.content(done.error_file_id).content)
    assert err["custom_id"] == "item-1"
    assert err["response"]["status_code"] == 400
    assert err["response"]["body"]["error"]["param"] == "model"

    set_faults(emu, batch_line_fail_rate=1.0)
    done = wait(
        c,
        c.batches.create(
            input_file_id=upload(c, [line(5)]), endpoint="/v1/responses", completion_window="24h"
        ).id,
    )
    assert done.error_file_id is not None
    (err,) = jsonl(c.files.content(done.error_file_id).content)
    assert err["response"]["status_code"] == 500
    assert err["response"]["body"]["error"]["type"] == "server_error"
    if flavor == "openai":
        assert done.output_file_id is None  # nothing succeeded


@pytest.mark.parametrize(
    ("items", "code", "at"),
    [
        ([line(0), line(0)], "duplicate_custom_id", 2),
        ([line(0), line(1, "/v1/chat/completions")], "mismatched_endpoint", 2),
        ([{"custom_id": "x", "method": "GET", "url": "/v1/responses", "body": {}}], None, 1),
    ],
)
def test_invalid_input_fails_the_batch(
    start: Start, items: list[dict[str, Any]], code: str | None, at: int
) -> None:
    emu = start(flavor="openai", **QUICK)
    c = client(emu)
    done = wait(
        c,
        c.batches.create(
            input_file_id=upload(c, items), endpoint="/v1/responses", completion_window="24h"
        ).id,
    )
    assert done.status == "failed" and done.failed_at
    assert done.errors is not None and done.errors.data
    error = done.errors.data[0]
    assert error.code == (code or "invalid_method") and error.line == at
    assert done.output_file_id is None and done.error_file_id is None


def test_injected_batch_failure_and_not_json(start: Start) -> None:
    emu = start(flavor="doubleword", faults={"batch_fail_rate": 1.0}, **QUICK)
    c = client(emu)
    batch = c.batches.create(
        input_file_id=upload(c, [line(0)]), endpoint="/v1/responses", completion_window="24h"
    )
    assert wait(c, batch.id).status == "failed"
    set_faults(emu, batch_fail_rate=0.0)
    bad = c.files.create(file=("bad.jsonl", b'{"custom_id": "a"\n'), purpose="batch")
    done = wait(
        c,
        c.batches.create(
            input_file_id=bad.id, endpoint="/v1/responses", completion_window="24h"
        ).id,
    )
    assert done.status == "failed"
    assert done.errors is not None and done.errors.data
    assert done.errors.data[0].code == "invalid_json_line"
    assert stats(emu)["totals"]["batches_failed"] == 2


@pytest.mark.parametrize("flavor", ["doubleword", "openai"])
def test_create_validation(start: Start, flavor: str) -> None:
    emu = start(flavor=flavor, **QUICK)
    c = client(emu)
    file_id = upload(c, [line(0)])
    with pytest.raises(openai.BadRequestError) as info:
        c.batches.create(
            input_file_id="file-nope", endpoint="/v1/responses", completion_window="24h"
        )
    assert "input_file_id" in str(info.value.body)
    with pytest.raises(openai.BadRequestError):
        c.batches.create(
            input_file_id=file_id,
            endpoint="/v1/embeddings",
            completion_window="24h",
        )
    one_hour: Any = "1h"
    if flavor == "openai":
        with pytest.raises(openai.BadRequestError):
            c.batches.create(
                input_file_id=file_id, endpoint="/v1/responses", completion_window=one_hour
            )
    else:
        made = c.batches.create(
            input_file_id=file_id, endpoint="/v1/responses", completion_window=one_hour
        )
        assert made.completion_window == "High (1h)"
    with pytest.raises(openai.BadRequestError):
        c.batches.create(
            input_file_id=file_id,
            endpoint="/v1/responses",
            completion_window="24h",
            metadata={"k" * 65: "v"},
        )
    assert stats(emu)["totals"]["batch_creates"] == (0 if flavor == "openai" else 1)


def test_upload_faults_and_size_limit(start: Start) -> None:
    emu = start(flavor="openai", max_file_bytes=1000, faults={"upload_5xx_rate": 1.0})
    c = client(emu)
    with pytest.raises(openai.InternalServerError):
        c.files.create(file=("a.jsonl", b"{}"), purpose="batch")
    set_faults(emu, upload_5xx_rate=0.0, upload_429_rate=1.0)
    with pytest.raises(openai.RateLimitError) as limited:
        c.files.create(file=("a.jsonl", b"{}"), purpose="batch")
    assert limited.value.response.headers["retry-after"] == "1"
    set_faults(emu, upload_429_rate=0.0)
    with pytest.raises(openai.APIStatusError) as big:
        c.files.create(file=("a.jsonl", b"x" * 1001), purpose="batch")
    assert big.value.status_code == 413
    with pytest.raises(openai.BadRequestError):
        c.files.create(file=("a.jsonl", b"{}"), purpose="nonsense")  # type: ignore[arg-type]
    ok = c.files.create(file=("a.jsonl", b"x" * 1000), purpose="batch")
    assert ok.bytes == 1000
    totals = stats(emu)["totals"]
    assert (totals["file_uploads"], totals["injected_errors"]) == (1, 2)


@pytest.mark.parametrize("flavor", ["doubleword", "openai"])
def test_files_retrieve_list_delete(start: Start, flavor: str) -> None:
    emu = start(flavor=flavor)
    c = client(emu)
    first = c.files.create(file=("one.jsonl", b'{"a": 1}\n'), purpose="batch")
    second = c.files.create(file=("two.jsonl", b'{"b": 2}\n'), purpose="user_data")
    assert not schema_errors("OpenAIFile", first.model_dump(mode="json"))
    got = c.files.retrieve(first.id)
    assert (got.filename, got.bytes, got.purpose, got.object) == ("one.jsonl", 9, "batch", "file")
    assert c.files.content(first.id).content == b'{"a": 1}\n'
    assert [f.id for f in c.files.list()] == [second.id, first.id]
    assert [f.id for f in c.files.list(purpose="batch")] == [first.id]
    deleted = c.files.delete(first.id)
    assert deleted.deleted and deleted.id == first.id
    with pytest.raises(openai.NotFoundError):
        c.files.retrieve(first.id)
    status, headers, _ = http(emu, "GET", f"/v1/files/{first.id}")
    assert status == 404
    kind = "text/plain" if flavor == "doubleword" else "application/json"
    assert headers["Content-Type"].startswith(kind)
    with pytest.raises(openai.NotFoundError):
        c.batches.retrieve("batch_nope")
    assert stats(emu)["totals"]["files_deleted"] == 1


def test_batches_list_pages(start: Start) -> None:
    emu = start(flavor="openai", **QUICK)
    c = client(emu)
    file_id = upload(c, [line(0)])
    made = [
        c.batches.create(
            input_file_id=file_id, endpoint="/v1/responses", completion_window="24h"
        ).id
        for _ in range(3)
    ]
    page = c.batches.list(limit=2)
    assert [b.id for b in page.data] == made[::-1][:2] and page.has_more
    assert [b.id for b in c.batches.list(limit=2)] == made[::-1]  # auto-pagination
    snap = stats(emu)
    assert snap["totals"]["batch_creates"] == 3
    assert snap["files"][file_id]["batch_creates"] == 3


def test_cancel_a_finished_batch(start: Start) -> None:
    emu = start(flavor="openai", **QUICK)
    c = client(emu)
    batch = c.batches.create(
        input_file_id=upload(c, [line(0)]), endpoint="/v1/responses", completion_window="24h"
    )
    wait(c, batch.id)
    with pytest.raises(openai.ConflictError):
        c.batches.cancel(batch.id)


def test_fifty_thousand_lines_stream(start: Start) -> None:
    """A 50,000-line batch completes; its output streams (chunked reads) with every line."""
    emu = start(flavor="doubleword", **QUICK)
    c = client(emu, timeout=120)
    n = 50_000
    file_id = upload(c, [line(i) for i in range(n)])
    done = wait(
        c,
        c.batches.create(
            input_file_id=file_id, endpoint="/v1/responses", completion_window="24h"
        ).id,
    )
    assert done.status == "completed"
    assert done.output_file_id is not None
    count, last = 0, ""
    with c.files.with_streaming_response.content(done.output_file_id) as resp:
        assert resp.headers["X-Last-Line"] == str(n)
        for raw in resp.iter_lines():
            if raw:
                count += 1
                last = raw
    assert count == n
    assert json.loads(last)["custom_id"] == f"item-{n - 1}"
