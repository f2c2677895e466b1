"""The emulated service without HTTP: creates records, owns the store, queue, faults, stats
and the webhook sender.

:class:`Emulator` is what the HTTP handlers call; tests and benchmarks may call it directly
(e.g. to queue 100,000 responses without 100,000 HTTP requests).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from flexpipe.emulator import batchqueue
from flexpipe.emulator.config import EmulatorConfig
from flexpipe.emulator.faults import Faults
from flexpipe.emulator.filestore import FileStore
from flexpipe.emulator.outputs import REQUEST_ONLY_KEYS, chat_as_responses_body, messages_from_input
from flexpipe.emulator.queue import Scheduler, draw_latencies
from flexpipe.emulator.records import Record, new_response_id
from flexpipe.emulator.stats import Stats
from flexpipe.emulator.store import Store
from flexpipe.emulator.upstream import Upstream
from flexpipe.emulator.validation import resolve_tier
from flexpipe.emulator.webhooks import RESPONSE_EVENTS, WebhookSender


class Emulator:
    """One emulated flex service."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.faults = Faults(config.seed, config.faults)
        self.store = Store(config.retention_s, config.max_retained)
        self.stats = Stats()
        self.webhooks = WebhookSender(config, self.faults)
        self.upstream = Upstream(config) if config.upstream_url else None
        self.scheduler = Scheduler(
            config,
            self.faults,
            self.store,
            processor=self.upstream.process if self.upstream else None,
            on_terminal=self._on_terminal,
        )
        self.files = FileStore()
        self.batches = batchqueue.Batches(config, self.faults, self.stats, self.files)
        self.index = 0
        self.started_at = time.time()

    def _on_terminal(self, rec: Record) -> None:
        if rec.kind == "response":
            self.stats.bump(rec.status)
            # OpenAI sends response.* events for background responses; Doubleword sends none.
            if self.config.flavor == "openai" and rec.background:
                self.webhooks.emit(RESPONSE_EVENTS[rec.status], rec.id, rec.finished_at)

    def _next_index(self) -> int:
        self.index += 1
        return self.index - 1

    def create(
        self,
        body: Mapping[str, Any],
        idem_key: str | None = None,
        previous: Record | None = None,
    ) -> Record:
        """Accept a validated ``POST /v1/responses`` body (on the event loop).

        With ``previous`` (the record named by ``previous_response_id``) the model sees the
        previous input and output before the new input; instructions are not carried over.
        """
        lane, tier = resolve_tier(self.config, body.get("service_tier"))
        index = self._next_index()
        delay, proc = draw_latencies(self.config, lane, index)
        messages = messages_from_input(body.get("input"), body.get("instructions"))
        if previous is not None:
            history = [m for m in previous.messages if m["role"] != "system"]
            if previous.output is not None:
                history.append({"role": "assistant", "content": previous.output.text})
            system = [m for m in messages if m["role"] == "system"][:1]
            messages = system + history + messages[len(system) :]
        rec = Record(
            id=new_response_id(self.config.flavor),
            index=index,
            kind="response",
            model=str(body["model"]),
            tier=tier,
            lane=lane,
            background=body.get("background") is True,
            body={k: v for k, v in body.items() if k not in REQUEST_ONLY_KEYS},
            messages=messages,
            created_at=time.time(),
            proc_s=proc,
        )
        rec.idem_key = idem_key
        self.store.add(rec)
        self.stats.bump("creates")
        self.scheduler.submit(rec, delay)
        return rec

    def create_chat(self, body: Mapping[str, Any]) -> Record:
        """Accept a validated chat-completions body; the record is not retrievable by id."""
        lane = "flex" if body.get("service_tier") == "flex" else "realtime"
        _, tier = resolve_tier(self.config, "flex" if lane == "flex" else body.get("service_tier"))
        index = self._next_index()
        delay, proc = draw_latencies(self.config, lane, index)
        messages = messages_from_input(body.get("messages"))
        rec = Record(
            id="chatcmpl-" + new_response_id("openai")[5:29],
            index=index,
            kind="chat",
            model=str(body["model"]),
            tier=tier,
            lane=lane,
            background=False,
            body=chat_as_responses_body(body),
            messages=messages,
            created_at=time.time(),
            proc_s=proc,
        )
        self.stats.bump("chat_completions")
        self.scheduler.submit(rec, delay)
        return rec

    def reset(self) -> None:
        """Forget every response and all stats (an emulator restart)."""
        for rec in list(self.store.records.values()):
            rec.notify()
        self.scheduler.reset()
        self.batches.reset()
        self.files.clear()
        self.store.clear()
        self.stats.reset()
        self.webhooks.cancel_all()
        self.faults.reset_counters()

    def stats_snapshot(self, include_responses: bool = True) -> dict[str, Any]:
        snap = self.stats.snapshot()
        sched = self.scheduler
        snap["totals"].update(
            responses_live=len(self.store),
            queued=sched.queued,
            in_progress=sched.in_progress,
            slots_busy=sched.busy,
            responses_evicted=self.store.evicted,
        )
        snap["webhooks"] = self.webhooks.snapshot()
        for key in batchqueue.TOTAL_KEYS:
            snap["totals"].setdefault(key, 0)
        snap["batches"] = self.batches.snapshot()
        snap["files"] = {fid: f.stats() for fid, f in self.files.files.items()}
        snap["config"] = {
            "flavor": self.config.flavor,
            "slots": self.config.slots,
            "time_scale": self.config.time_scale,
            "seed": self.config.seed,
        }
        if include_responses:
            snap["responses"] = {rid: rec.stats() for rid, rec in self.store.records.items()}
        return snap
