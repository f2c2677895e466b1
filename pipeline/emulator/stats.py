"""Request counting for ``/_emulator/stats``: per endpoint and status code, plus totals.

Per-response counters (creates, polls, state timestamps) live on the records themselves and
go away with them at retention expiry; the totals here are kept until ``/_emulator/reset``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

TOTAL_KEYS = (
    "creates",
    "polls",
    "requests",
    "retries_seen",
    "dropped",
    "injected_errors",
    "idempotent_replays",
    "completed",
    "incomplete",
    "failed",
    "cancelled",
    "deleted",
    "chat_completions",
)


class Stats:
    """Counters; cheap enough to update on every request."""

    __slots__ = ("requests", "totals")

    def __init__(self) -> None:
        self.requests: defaultdict[str, defaultdict[str, int]] = defaultdict(
            lambda: defaultdict(int)
        )
        self.totals: dict[str, int] = dict.fromkeys(TOTAL_KEYS, 0)

    def count(self, route: str, status: int | str) -> None:
        self.requests[route][str(status)] += 1
        self.totals["requests"] += 1

    def bump(self, key: str, n: int = 1) -> None:
        self.totals[key] = self.totals.get(key, 0) + n

    def reset(self) -> None:
        self.requests.clear()
        self.totals = dict.fromkeys(TOTAL_KEYS, 0)

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": {route: dict(codes) for route, codes in self.requests.items()},
            "totals": dict(self.totals),
        }
