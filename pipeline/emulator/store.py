"""The response store: id → :class:`Record`, idempotency keys, and retention limits.

Terminal (and deleted) records are forgotten ``retention_s`` real seconds after they end, and
at most ``max_retained`` of them are kept (the oldest finished go first), so memory stays
bounded during long benchmarks and under a flood of requests. Records still queued or
running are never evicted.
"""

from __future__ import annotations

import uuid

from flexpipe.emulator.records import Record


class Store:
    """All responses the emulator remembers."""

    __slots__ = ("_finished", "evicted", "idem", "max_retained", "records", "retention_s")

    def __init__(self, retention_s: float, max_retained: int = 0) -> None:
        self.retention_s = retention_s
        #: Most finished records kept (0: no limit besides ``retention_s``).
        self.max_retained = max_retained
        self.records: dict[str, Record] = {}
        self.idem: dict[str, str] = {}
        #: Finished records' ids → expiry time, oldest first (the retention is the same for
        #: all, so the order of insertion is the order of expiry).
        self._finished: dict[str, float] = {}
        #: Records forgotten early because of ``max_retained``.
        self.evicted = 0

    def add(self, rec: Record) -> None:
        self.records[rec.id] = rec
        if rec.idem_key is not None:
            self.idem[rec.idem_key] = rec.id

    def get(self, response_id: str, *, lenient_prefix: bool = False) -> Record | None:
        """The live (not deleted) record, or ``None``.

        With ``lenient_prefix`` (doubleword) the ``resp_`` prefix is optional and the rest must
        be a UUID.
        """
        rec = self.records.get(response_id)
        if rec is None and lenient_prefix:
            raw = response_id.removeprefix("resp_")
            try:
                rec = self.records.get(f"resp_{uuid.UUID(raw)}")
            except ValueError:
                return None
        if rec is None or rec.deleted:
            return None
        return rec

    def by_idempotency_key(self, key: str) -> Record | None:
        rid = self.idem.get(key)
        return self.get(rid) if rid is not None else None

    def schedule_expiry(self, rec: Record, now_mono: float) -> None:
        """Forget ``rec`` ``retention_s`` from now (called when it ends or is deleted)."""
        rec.expire_at = now_mono + self.retention_s
        self._finished.pop(rec.id, None)
        self._finished[rec.id] = rec.expire_at
        if self.max_retained:
            while len(self._finished) > self.max_retained:
                self._forget(next(iter(self._finished)))
                self.evicted += 1

    def expire(self, now_mono: float) -> float | None:
        """Drop records whose retention has passed; return the next expiry time, if any."""
        finished = self._finished
        while finished:
            rid, due = next(iter(finished.items()))
            if due > now_mono:
                return due
            self._forget(rid)
        return None

    def _forget(self, rid: str) -> None:
        del self._finished[rid]
        rec = self.records.pop(rid, None)
        if rec is not None and rec.idem_key is not None and self.idem.get(rec.idem_key) == rid:
            del self.idem[rec.idem_key]

    def clear(self) -> None:
        self.records.clear()
        self.idem.clear()
        self._finished.clear()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self.records)
