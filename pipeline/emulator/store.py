"""The response store: id → :class:`Record`, idempotency keys, and retention expiry.

Terminal (and deleted) records are forgotten ``retention_s`` real seconds after they end,
through one heap of expiry times, so memory stays bounded during long benchmarks.
"""

from __future__ import annotations

import heapq
import uuid

from flexpipe.emulator.records import Record


class Store:
    """All responses the emulator remembers."""

    __slots__ = ("_expiry", "_seq", "idem", "records", "retention_s")

    def __init__(self, retention_s: float) -> None:
        self.retention_s = retention_s
        self.records: dict[str, Record] = {}
        self.idem: dict[str, str] = {}
        self._expiry: list[tuple[float, int, str]] = []
        self._seq = 0

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
        self._seq += 1
        heapq.heappush(self._expiry, (rec.expire_at, self._seq, rec.id))

    def expire(self, now_mono: float) -> float | None:
        """Drop records whose retention has passed; return the next expiry time, if any."""
        heap = self._expiry
        while heap and heap[0][0] <= now_mono:
            due, _, rid = heapq.heappop(heap)
            rec = self.records.get(rid)
            if rec is not None and rec.expire_at == due:
                del self.records[rid]
                if rec.idem_key is not None and self.idem.get(rec.idem_key) == rid:
                    del self.idem[rec.idem_key]
        return heap[0][0] if heap else None

    def clear(self) -> None:
        self.records.clear()
        self.idem.clear()
        self._expiry.clear()

    def __len__(self) -> int:
        return len(self.records)
