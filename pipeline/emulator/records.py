"""The emulator's memory of one response (or one held chat completion), kept small.

A :class:`Record` uses ``__slots__`` and stores the request fields it needs to echo, the
timestamps of each state change (wall-clock unix floats, also reported by ``/_emulator/stats``)
and, once terminal, the output and the cached JSON bytes of the GET answer.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

from flexpipe.emulator.outputs import Output

#: Statuses after which a record never changes.
TERMINAL = frozenset({"completed", "failed", "cancelled", "incomplete"})


def new_response_id(flavor: str) -> str:
    """``resp_<uuid4>`` (doubleword) or ``resp_`` + 48 hex digits (openai)."""
    if flavor == "doubleword":
        return f"resp_{uuid.uuid4()}"
    return "resp_" + os.urandom(24).hex()


class Record:
    """State of one emulated response (``kind="response"``) or chat completion (``"chat"``)."""

    __slots__ = (
        "background",
        "body",
        "cached",
        "created_at",
        "deleted",
        "error",
        "expire_at",
        "finished_at",
        "id",
        "idem_key",
        "in_progress_at",
        "in_slot",
        "index",
        "kind",
        "lane",
        "messages",
        "model",
        "output",
        "polls",
        "proc_s",
        "read_done",
        "status",
        "stream",
        "tier",
        "waiters",
    )

    def __init__(
        self,
        *,
        id: str,
        index: int,
        kind: str,
        model: str,
        tier: str,
        lane: str,
        background: bool,
        body: dict[str, Any],
        messages: list[dict[str, str]],
        created_at: float,
        proc_s: float,
    ) -> None:
        self.id = id
        self.index = index
        self.kind = kind
        self.model = model
        #: Tier echoed in ``service_tier`` (the one actually used).
        self.tier = tier
        #: ``flex`` | ``background`` | ``realtime``.
        self.lane = lane
        self.background = background
        #: The create body (fields echoed in the openai flavour; ``input`` dropped).
        self.body = body
        self.messages = messages
        self.created_at = created_at
        #: Real seconds of processing once a slot is taken.
        self.proc_s = proc_s
        self.status = "queued"
        self.stream = bool(body.get("stream"))
        self.in_progress_at: float | None = None
        self.finished_at: float | None = None
        self.output: Output | None = None
        #: ``(http-ish code, message)`` when failed.
        self.error: tuple[int, str] | None = None
        self.polls = 0
        self.read_done = False
        self.in_slot = False
        self.cached: bytes | None = None
        self.waiters: list[asyncio.Future[None]] | None = None
        self.idem_key: str | None = None
        self.expire_at: float | None = None
        #: Deleted by the client: answers 404 but stats are kept until expiry.
        self.deleted = False

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def wait_future(self) -> asyncio.Future[None]:
        """A future resolved when the record reaches a terminal status."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.terminal:
            fut.set_result(None)
            return fut
        if self.waiters is None:
            self.waiters = []
        self.waiters.append(fut)
        return fut

    def notify(self) -> None:
        """Wake every waiter (called once, on the terminal transition)."""
        waiters, self.waiters = self.waiters, None
        for fut in waiters or ():
            if not fut.done():
                fut.set_result(None)

    def stats(self) -> dict[str, Any]:
        """Per-id counters and timestamps for ``/_emulator/stats``."""
        return {
            "creates": 1,
            "polls": self.polls,
            "status": self.status,
            "tier": self.tier,
            "lane": self.lane,
            "model": self.model,
            "background": self.background,
            "metadata": self.body.get("metadata") or {},
            "queued_at": self.created_at,
            "in_progress_at": self.in_progress_at,
            "finished_at": self.finished_at,
        }
