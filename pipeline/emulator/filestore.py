"""The emulator's files (``/v1/files``): uploaded batch inputs and the batches' result files.

An uploaded file keeps its bytes once (the upload buffer, not a copy). A batch's output or
error file is a list of JSONL lines that grows while the batch runs; downloads stream slices
of that list, so a 50,000-line result is never joined into one big string.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

#: Purposes ``POST /v1/files`` accepts (the OpenAPI ``CreateFileRequest`` enum).
PURPOSES = frozenset({"assistants", "batch", "fine-tune", "vision", "user_data", "evals"})


def new_file_id(flavor: str) -> str:
    """``file-<uuid4>`` (doubleword) or ``file-`` + 24 hex digits (openai)."""
    if flavor == "doubleword":
        return f"file-{uuid.uuid4()}"
    return "file-" + os.urandom(12).hex()


class File:
    """One file: uploaded ``data``, or the ``lines`` a batch writes (``purpose=batch_output``)."""

    __slots__ = (
        "batch_creates",
        "complete",
        "created_at",
        "data",
        "downloads",
        "filename",
        "id",
        "lines",
        "purpose",
        "size",
        "uploaded",
    )

    def __init__(
        self,
        id: str,
        filename: str,
        purpose: str,
        data: bytes | bytearray | None = None,
    ) -> None:
        self.id = id
        self.filename = filename
        self.purpose = purpose
        self.created_at = time.time()
        #: The uploaded bytes (``None`` for a batch's output/error file).
        self.data = data
        #: JSONL lines (each ending in ``\\n``) of a batch's output/error file.
        self.lines: list[bytes] = []
        self.size = len(data) if data is not None else 0
        #: ``False`` while the batch that writes this file may still add lines.
        self.complete = data is not None
        self.uploaded = data is not None
        self.batch_creates = 0
        self.downloads = 0

    def append(self, line: bytes) -> None:
        self.lines.append(line)
        self.size += len(line)

    def as_object(self) -> dict[str, Any]:
        """The ``OpenAIFile`` object."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.size,
            "created_at": int(self.created_at),
            "expires_at": None,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }

    def stats(self) -> dict[str, Any]:
        """Per-file counters for ``/_emulator/stats``."""
        return {
            "purpose": self.purpose,
            "bytes": self.size,
            "uploads": int(self.uploaded),
            "batch_creates": self.batch_creates,
            "content_downloads": self.downloads,
            "lines": len(self.lines) if self.data is None else None,
        }


class FileStore:
    """Every file the emulator holds, in creation order (kept until deleted or reset)."""

    __slots__ = ("files",)

    def __init__(self) -> None:
        self.files: dict[str, File] = {}

    def add(self, file: File) -> File:
        self.files[file.id] = file
        return file

    def get(self, file_id: str) -> File | None:
        return self.files.get(file_id)

    def delete(self, file_id: str) -> bool:
        return self.files.pop(file_id, None) is not None

    def clear(self) -> None:
        self.files.clear()
