"""The pending-ids spool: response ids the provider gave that SQL has not recorded yet.

Between the provider's answer to a create and the commit that records its response id,
the id lives only in the submitting process. If the database refuses that commit for
longer than the store retries (a failover, a full disk) or the process dies, the job
stays ``pending`` and would be created again, and billed twice. So the id is first
appended to this file, one fsync'd line per ``(job_id, attempt, response_id)``, and a
"recorded" line follows the commit. The next submit of that job on the same data dir
(any worker process, after a restart too) finds the id here and polls it instead of
creating again.

The file is append-only, shared by every process on the data dir under an exclusive
``flock`` on a lock file beside it, and compacted (rewritten with only the entries still
pending, then renamed into place) once it grows past ``compact_bytes``. A lost
"recorded" line costs nothing: an entry is only used for a job that is still pending on
the same attempt, and a job whose id was recorded is never pending on that attempt again.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("flexpipe.spool")

#: The file's name in the data dir.
SPOOL_NAME = "pending-responses.jsonl"


class Spool:
    """Response ids waiting for their commit; ``Spool(None)`` keeps nothing (tests)."""

    def __init__(self, path: Path | None, *, compact_bytes: int = 64 * 1024) -> None:
        self.path = path
        self.compact_bytes = compact_bytes
        self._lock_path = None if path is None else path.with_name(path.name + ".lock")

    @classmethod
    def in_dir(cls, data_dir: Path) -> Spool:
        data_dir.mkdir(parents=True, exist_ok=True)
        return cls(data_dir / SPOOL_NAME)

    def add(self, job_id: str, attempt: int, response_id: str) -> None:
        """Keep a response id until :meth:`recorded`; durable (fsync'd) when this returns."""
        self._append({"job": job_id, "attempt": attempt, "response": response_id}, sync=True)

    def recorded(self, job_id: str, attempt: int) -> None:
        """SQL has this attempt's response id now; the entry is no longer needed."""
        self._append({"job": job_id, "attempt": attempt, "recorded": True}, sync=False)

    def find(self, job_id: str, attempt: int) -> str | None:
        """The response id kept for this attempt of a job, if any."""
        if self.path is None:
            return None
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        if job_id not in text:
            return None
        return _pending(text).get((job_id, attempt))

    def pending(self) -> list[tuple[str, int, str]]:
        """Every ``(job_id, attempt, response_id)`` not yet recorded."""
        if self.path is None:
            return []
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        return [(job, attempt, rid) for (job, attempt), rid in _pending(text).items()]

    # -- the file --------------------------------------------------------------------------

    def _append(self, entry: dict[str, object], *, sync: bool) -> None:
        if self.path is None:
            return
        line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
        with self._locked():
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
                if sync:
                    os.fsync(fd)
                size = os.fstat(fd).st_size
            finally:
                os.close(fd)
            if size > self.compact_bytes:
                self._compact()

    def _compact(self) -> None:
        """Rewrite the file with only the pending entries (the caller holds the lock)."""
        assert self.path is not None
        keep = _pending(self.path.read_text())
        partial = self.path.with_name(self.path.name + ".part")
        with open(partial, "w") as f:
            for (job, attempt), rid in keep.items():
                f.write(json.dumps({"job": job, "attempt": attempt, "response": rid}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        log.debug("spool compacted: %d pending", len(keep))

    @contextmanager
    def _locked(self) -> Iterator[None]:
        assert self._lock_path is not None
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock


def _pending(text: str) -> dict[tuple[str, int], str]:
    out: dict[tuple[str, int], str] = {}
    for line in text.splitlines():
        try:
            entry = json.loads(line)
            key = (str(entry["job"]), int(entry["attempt"]))
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a crash
        if entry.get("recorded"):
            out.pop(key, None)
        elif isinstance(entry.get("response"), str):
            out[key] = entry["response"]
    return out
