"""The batch queue: moves batches through ``validating → in_progress → finalizing → completed``
(or ``failed``, ``cancelling → cancelled``, ``expired``) and processes their lines.

A batch waits ``batch_validate_s`` in ``validating``, where its input file is checked line by
line (only line offsets are kept, not parsed copies). In ``in_progress`` its lines finish
evenly spread over one draw of ``batch_latency``, in input order, each with the same
deterministic output as a Responses (or chat) request; at most :data:`CHUNK` lines are
processed per event-loop callback. There is one timer per running batch, never one per line.
Lines that fail validation or an injected fault go to the error file; a batch whose window
passes (or that draws ``batch_expire_rate``) ends ``expired`` and its unprocessed lines go to
the error file as ``batch_expired``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
import uuid
from array import array
from typing import Any

from flexpipe.emulator.config import EmulatorConfig
from flexpipe.emulator.faults import Faults
from flexpipe.emulator.filestore import File, FileStore, new_file_id
from flexpipe.emulator.objects import chat_completion, dumps, error_body, openai_object
from flexpipe.emulator.outputs import chat_as_responses_body, digest, generate, messages_from_input
from flexpipe.emulator.records import Record, new_response_id
from flexpipe.emulator.stats import Stats
from flexpipe.emulator.validation import InvalidRequest, validate_chat, validate_create

#: Endpoints a batch may target.
ENDPOINTS = ("/v1/responses", "/v1/chat/completions")
#: Statuses after which a batch never changes.
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
#: Most lines processed in one event-loop callback.
CHUNK = 500
#: Shortest gap between two processing ticks of one batch, real seconds.
MIN_TICK = 0.02
#: Totals this module counts (reported as 0 before the first event).
TOTAL_KEYS = (
    "file_uploads",
    "files_deleted",
    "content_downloads",
    "batch_creates",
    "batch_retrieves",
    "batch_cancels",
    "batches_completed",
    "batches_failed",
    "batches_expired",
    "batches_cancelled",
    "batch_lines_completed",
    "batch_lines_failed",
)

_WINDOWS: dict[str, tuple[str, float]] = {
    "24h": ("24h", 86_400.0),
    "Standard (24h)": ("24h", 86_400.0),
    "1h": ("1h", 3_600.0),
    "High (1h)": ("1h", 3_600.0),
}
_DW_LABELS = {"24h": "Standard (24h)", "1h": "High (1h)"}


def parse_window(flavor: str, value: Any) -> tuple[str, str, float] | None:
    """``(window, echoed label, emulated seconds)`` for a ``completion_window``, or ``None``.

    openai accepts only ``24h``; doubleword also ``1h`` and the display labels
    ``Standard (24h)`` / ``High (1h)``, and echoes the label.
    """
    if not isinstance(value, str) or value not in _WINDOWS:
        return None
    window, seconds = _WINDOWS[value]
    if flavor == "openai":
        return ("24h", "24h", seconds) if value == "24h" else None
    return window, _DW_LABELS[window], seconds


def new_batch_id(flavor: str) -> str:
    """``batch_<uuid4>`` (doubleword) or ``batch_`` + 32 hex digits (openai)."""
    if flavor == "doubleword":
        return f"batch_{uuid.uuid4()}"
    return "batch_" + os.urandom(16).hex()


class BatchError(Exception):
    """Raised while validating an input file: the batch fails with this ``errors`` entry."""

    def __init__(self, code: str, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.entry = {"code": code, "message": message, "param": None, "line": line}


class Batch:
    """State of one emulated batch."""

    __slots__ = (
        "cancelled_at",
        "cancelling_at",
        "completed",
        "completed_at",
        "created_at",
        "done",
        "endpoint",
        "ends",
        "error_file",
        "errors",
        "expire_after",
        "expired_at",
        "expires_at",
        "failed",
        "failed_at",
        "finalizing_at",
        "id",
        "in_progress_at",
        "index",
        "input",
        "input_tokens",
        "label",
        "metadata",
        "output_file",
        "output_tokens",
        "proc_s",
        "retrieves",
        "show_files",
        "start_mono",
        "starts",
        "status",
        "timer",
        "total",
        "window",
    )

    def __init__(
        self,
        *,
        id: str,
        index: int,
        input: File,
        endpoint: str,
        window: str,
        label: str,
        window_s: float,
        metadata: dict[str, str] | None,
        output_file: File,
        error_file: File,
        show_files: bool,
    ) -> None:
        self.id = id
        self.index = index
        self.input = input
        self.endpoint = endpoint
        #: ``24h`` or ``1h``; ``label`` is what the object echoes.
        self.window = window
        self.label = label
        self.metadata = metadata
        self.created_at = time.time()
        #: Wall-clock time the completion window closes (scaled).
        self.expires_at = self.created_at + window_s
        self.status = "validating"
        self.in_progress_at: float | None = None
        self.finalizing_at: float | None = None
        self.completed_at: float | None = None
        self.failed_at: float | None = None
        self.expired_at: float | None = None
        self.cancelling_at: float | None = None
        self.cancelled_at: float | None = None
        self.errors: list[dict[str, Any]] = []
        self.output_file = output_file
        self.error_file = error_file
        #: Whether the object names the result files (doubleword: from create; openai: at end).
        self.show_files = show_files
        self.starts = array("q")
        self.ends = array("q")
        self.total = 0
        #: Lines handled so far (the next line to process).
        self.done = 0
        self.completed = 0
        self.failed = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.proc_s = 0.0
        self.start_mono = 0.0
        #: Line count after which the batch expires (``batch_expire_rate``), if it drew it.
        self.expire_after: int | None = None
        self.timer: asyncio.Handle | None = None
        self.retrieves = 0

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def as_object(self, flavor: str) -> dict[str, Any]:
        """The ``Batch`` object."""

        def ts(value: float | None) -> int | None:
            return int(value) if value is not None else None

        shown = self.show_files
        obj: dict[str, Any] = {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.input.id,
            "completion_window": self.label,
            "status": self.status,
            "output_file_id": self.output_file.id if shown and self.output_file.lines else None,
            "error_file_id": self.error_file.id if shown and self.error_file.lines else None,
            "created_at": int(self.created_at),
            "in_progress_at": ts(self.in_progress_at),
            "expires_at": int(self.expires_at),
            "finalizing_at": ts(self.finalizing_at),
            "completed_at": ts(self.completed_at),
            "failed_at": ts(self.failed_at),
            "expired_at": ts(self.expired_at),
            "cancelling_at": ts(self.cancelling_at),
            "cancelled_at": ts(self.cancelled_at),
            "request_counts": {
                "total": self.total,
                "completed": self.completed,
                "failed": self.failed,
            },
            "metadata": self.metadata,
        }
        if flavor == "doubleword":
            # Allocated at create, so partial results can be read while the batch runs.
            obj["output_file_id"] = self.output_file.id
            obj["error_file_id"] = self.error_file.id
        else:
            obj["usage"] = {
                "input_tokens": self.input_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": self.output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": self.input_tokens + self.output_tokens,
            }
        return obj

    def stats(self) -> dict[str, Any]:
        """Per-batch counters and timestamps for ``/_emulator/stats``."""
        return {
            "creates": 1,
            "retrieves": self.retrieves,
            "content_downloads": self.output_file.downloads + self.error_file.downloads,
            "status": self.status,
            "endpoint": self.endpoint,
            "completion_window": self.window,
            "input_file_id": self.input.id,
            "request_counts": {
                "total": self.total,
                "completed": self.completed,
                "failed": self.failed,
            },
            "metadata": self.metadata or {},
            "created_at": self.created_at,
            "in_progress_at": self.in_progress_at,
            "finished_at": self.completed_at
            or self.failed_at
            or self.expired_at
            or self.cancelled_at,
        }


class Batches:
    """All batches, and the timers that move them along (call on the event loop)."""

    def __init__(
        self, config: EmulatorConfig, faults: Faults, stats: Stats, files: FileStore
    ) -> None:
        self.config = config
        self.faults = faults
        self.stats = stats
        self.files = files
        self.batches: dict[str, Batch] = {}
        self.index = 0

    # -- public -------------------------------------------------------------------------

    def create(
        self,
        input_file: File,
        endpoint: str,
        completion_window: str,
        metadata: dict[str, str] | None,
    ) -> Batch:
        """Accept a validated ``POST /v1/batches`` body; the batch starts ``validating``."""
        flavor = self.config.flavor
        parsed = parse_window(flavor, completion_window)
        assert parsed is not None
        window, label, seconds = parsed
        outputs = [
            self.files.add(File(new_file_id(flavor), f"{kind}.jsonl", "batch_output"))
            for kind in ("output", "error")
        ]
        batch = Batch(
            id=new_batch_id(flavor),
            index=self.index,
            input=input_file,
            endpoint=endpoint,
            window=window,
            label=label,
            window_s=self.config.scaled(seconds),
            metadata=metadata,
            output_file=outputs[0],
            error_file=outputs[1],
            show_files=flavor == "doubleword",
        )
        for f in outputs:
            f.filename = f"{batch.id}_{f.filename}"
        self.index += 1
        self.batches[batch.id] = batch
        input_file.batch_creates += 1
        self.stats.bump("batch_creates")
        loop = asyncio.get_running_loop()
        batch.timer = loop.call_later(
            self.config.scaled(self.config.batch_validate_s), self._validate, batch
        )
        return batch

    def get(self, batch_id: str) -> Batch | None:
        return self.batches.get(batch_id)

    def cancel(self, batch: Batch) -> bool:
        """Start cancelling; ``False`` if the batch is past the point where it can be."""
        if batch.status in ("cancelling", "cancelled"):
            return True
        if batch.status not in ("validating", "in_progress"):
            return False
        self._stop_timer(batch)
        batch.status = "cancelling"
        batch.cancelling_at = time.time()
        self.stats.bump("batch_cancels")
        batch.timer = asyncio.get_running_loop().call_later(
            self.config.scaled(self.config.batch_finalize_s), self._end, batch, "cancelled"
        )
        return True

    def reset(self) -> None:
        """Forget every batch (an emulator restart); the caller clears the files."""
        for batch in self.batches.values():
            self._stop_timer(batch)
        self.batches.clear()
        self.index = 0

    def snapshot(self) -> dict[str, Any]:
        return {bid: b.stats() for bid, b in self.batches.items()}

    # -- lifecycle ----------------------------------------------------------------------

    def _stop_timer(self, batch: Batch) -> None:
        if batch.timer is not None:
            batch.timer.cancel()
            batch.timer = None

    def _validate(self, batch: Batch) -> None:
        batch.timer = None
        if batch.status != "validating":
            return
        try:
            if self.faults.hits("batch_fail_rate", batch.index):
                raise BatchError("invalid_request", "The batch failed validation (injected fault).")
            self._index_lines(batch)
        except BatchError as exc:
            batch.errors.append(exc.entry)
            batch.starts, batch.ends = array("q"), array("q")
            batch.total = 0
            self._end(batch, "failed")
            return
        batch.status = "in_progress"
        batch.in_progress_at = time.time()
        rng = random.Random(digest(self.config.seed, "batch", batch.index))
        batch.proc_s = self.config.scaled(self.config.batch_latency.draw(rng))
        if self.faults.hits("batch_expire_rate", batch.index):
            batch.expire_after = batch.total // 2
        loop = asyncio.get_running_loop()
        batch.start_mono = loop.time()
        batch.timer = loop.call_soon(self._advance, batch)

    def _index_lines(self, batch: Batch) -> None:
        data = batch.input.data
        if data is None or batch.input.purpose != "batch":
            raise BatchError("invalid_file", "The input file is not a batch input file.")
        seen: set[str] = set()
        pos, n, size = 0, 0, len(data)
        limit = self.config.batch_max_lines
        max_id = 64 if self.config.flavor == "doubleword" else 512
        while pos < size:
            end = data.find(b"\n", pos)
            if end < 0:
                end = size
            start, pos = pos, end + 1
            if not data[start:end].strip():
                continue
            n += 1
            if n > limit:
                raise BatchError(
                    "too_many_requests",
                    f"The input file has more than the maximum of {limit} requests.",
                )
            try:
                line = json.loads(data[start:end])
            except (ValueError, UnicodeDecodeError):
                raise BatchError("invalid_json_line", f"Line {n} is not valid JSON.", n) from None
            if not isinstance(line, dict):
                raise BatchError("invalid_json_line", f"Line {n} is not a JSON object.", n)
            cid = line.get("custom_id")
            if not isinstance(cid, str) or not cid or len(cid) > max_id:
                raise BatchError(
                    "invalid_custom_id",
                    f"Line {n}: 'custom_id' must be a string of 1 to {max_id} characters.",
                    n,
                )
            if cid in seen:
                raise BatchError(
                    "duplicate_custom_id",
                    f"The custom_id '{cid}' on line {n} is not unique in the batch.",
                    n,
                )
            seen.add(cid)
            if line.get("method") != "POST":
                raise BatchError("invalid_method", f"Line {n}: 'method' must be 'POST'.", n)
            if line.get("url") != batch.endpoint:
                raise BatchError(
                    "mismatched_endpoint",
                    f"Line {n}: 'url' {line.get('url')!r} does not match the batch endpoint "
                    f"{batch.endpoint!r}.",
                    n,
                )
            if not isinstance(line.get("body"), dict):
                raise BatchError("invalid_body", f"Line {n}: 'body' must be an object.", n)
            batch.starts.append(start)
            batch.ends.append(end)
        if n == 0:
            raise BatchError("empty_file", "The input file has no requests.")
        batch.total = n

    def _advance(self, batch: Batch) -> None:
        batch.timer = None
        if batch.status != "in_progress":
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if time.time() >= batch.expires_at:
            self._expire(batch)
            return
        if batch.proc_s <= 0:
            due = batch.total
        else:
            due = min(batch.total, int(batch.total * (now - batch.start_mono) / batch.proc_s))
        if batch.expire_after is not None:
            due = min(due, batch.expire_after)
        stop = min(due, batch.done + CHUNK)
        while batch.done < stop:
            self._process(batch, batch.done)
            batch.done += 1
        if batch.expire_after is not None and batch.done >= batch.expire_after:
            self._expire(batch)
            return
        if batch.done >= batch.total:
            batch.status = "finalizing"
            batch.finalizing_at = time.time()
            batch.timer = loop.call_later(
                self.config.scaled(self.config.batch_finalize_s), self._end, batch, "completed"
            )
            return
        if batch.done < due:
            batch.timer = loop.call_soon(self._advance, batch)
            return
        next_due = batch.start_mono + batch.proc_s * (batch.done + 1) / batch.total
        closes = now + (batch.expires_at - time.time())
        when = max(min(next_due, closes), now + MIN_TICK)
        batch.timer = loop.call_at(when, self._advance, batch)

    def _expire(self, batch: Batch) -> None:
        message = "This request could not be executed before the completion window expired."
        data = batch.input.data
        assert data is not None
        while batch.done < batch.total:
            i = batch.done
            line = json.loads(data[batch.starts[i] : batch.ends[i]])
            self._write_error(
                batch,
                line["custom_id"],
                None,
                {"code": "batch_expired", "message": message},
            )
            batch.done += 1
        self._end(batch, "expired")

    def _end(self, batch: Batch, status: str) -> None:
        batch.timer = None
        now = time.time()
        batch.status = status
        setattr(batch, f"{status}_at", now)
        batch.show_files = True
        batch.output_file.complete = batch.error_file.complete = True
        batch.starts, batch.ends = array("q"), array("q")
        self.stats.bump(f"batches_{status}")

    # -- lines --------------------------------------------------------------------------

    def _write_error(
        self,
        batch: Batch,
        custom_id: str,
        response: dict[str, Any] | None,
        error: dict[str, Any] | None,
    ) -> None:
        batch.failed += 1
        self.stats.bump("batch_lines_failed")
        batch.error_file.append(_line(custom_id, response, error))

    def _process(self, batch: Batch, i: int) -> None:
        data = batch.input.data
        assert data is not None
        line = json.loads(data[batch.starts[i] : batch.ends[i]])
        custom_id: str = line["custom_id"]
        body: dict[str, Any] = line["body"]
        request_id = "req_" + os.urandom(16).hex()
        if self.faults.hits("batch_line_fail_rate", batch.index, i):
            err = error_body(
                "The server had an error while processing your request (injected fault).",
                "server_error",
            )
            self._write_error(
                batch,
                custom_id,
                {"status_code": 500, "request_id": request_id, "body": err},
                None,
            )
            return
        chat = batch.endpoint == "/v1/chat/completions"
        try:
            if chat:
                validate_chat(self.config, body)
            else:
                validate_create(self.config, body)
        except InvalidRequest as exc:
            err = error_body(exc.message, "invalid_request_error", exc.param, exc.code)
            self._write_error(
                batch,
                custom_id,
                {"status_code": exc.status, "request_id": request_id, "body": err},
                None,
            )
            return
        rec = self._record(batch, i, body, chat)
        result = chat_completion(rec) if chat else openai_object(rec)
        out = rec.output
        assert out is not None
        batch.input_tokens += out.input_tokens
        batch.output_tokens += out.output_tokens
        batch.completed += 1
        self.stats.bump("batch_lines_completed")
        response = {"status_code": 200, "request_id": request_id, "body": result}
        batch.output_file.append(_line(custom_id, response, None))

    def _record(self, batch: Batch, i: int, body: dict[str, Any], chat: bool) -> Record:
        """A throw-away record of line ``i`` with its output (rendered by ``objects``)."""
        if chat:
            fields = chat_as_responses_body(body)
            messages = messages_from_input(body.get("messages"))
            rid = "chatcmpl-" + os.urandom(12).hex()
        else:
            fields = {k: v for k, v in body.items() if k != "input"}
            messages = messages_from_input(body.get("input"), body.get("instructions"))
            rid = new_response_id(self.config.flavor)
        tier = "flex" if self.config.flavor == "doubleword" and batch.window == "1h" else "default"
        now = time.time()
        rec = Record(
            id=rid,
            index=i,
            kind="chat" if chat else "response",
            model=str(body["model"]),
            tier=tier,
            lane="batch",
            background=False,
            body=fields,
            messages=messages,
            created_at=batch.in_progress_at or now,
            proc_s=0.0,
        )
        text = fields.get("text")
        fmt = text.get("format") if isinstance(text, dict) else None
        rec.output = generate(
            messages,
            fmt if isinstance(fmt, dict) else None,
            fields.get("max_output_tokens"),
            self.config.seed,
        )
        rec.status = "incomplete" if rec.output.truncated else "completed"
        rec.finished_at = now
        return rec


def _line(custom_id: str, response: dict[str, Any] | None, error: dict[str, Any] | None) -> bytes:
    obj = {
        "id": "batch_req_" + os.urandom(16).hex(),
        "custom_id": custom_id,
        "response": response,
        "error": error,
    }
    return dumps(obj) + b"\n"
