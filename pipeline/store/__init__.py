"""The SQL store: the one package that reads and writes flexpipe's tables.

:class:`Store` is composed from one part per concern, each a module here: the
connection (:mod:`.engine`), the prebuilt statements (:mod:`.statements`), job writes
(:mod:`.jobs`), job reads (:mod:`.reads`), bulk jobs (:mod:`.bulks`), the sweeper's claims
(:mod:`.sweeps`), webhook events (:mod:`.webhooks`), callback receipts (:mod:`.receipts`),
heartbeats of periodic duties (:mod:`.heartbeats`), the prune of old history
(:mod:`.retention`) and the mapping of rows to the core's
dataclasses (:mod:`.rows`). Every method is one short transaction, and the same code runs
on SQLite (the default) and PostgreSQL.
"""

from __future__ import annotations

from typing import Any

from flexpipe.store.bulks import Bulks
from flexpipe.store.engine import TRANSIENT_DB_ERRORS, make_engine, retrying, safe_url
from flexpipe.store.heartbeats import Heartbeats
from flexpipe.store.jobs import JobWrites
from flexpipe.store.reads import JobReads
from flexpipe.store.receipts import Receipts
from flexpipe.store.records import Finished, NewJob, Outcome, new_id
from flexpipe.store.retention import Pruned, Retention
from flexpipe.store.sweeps import Sweeps
from flexpipe.store.webhooks import WebhookBatch, Webhooks

__all__ = [
    "TRANSIENT_DB_ERRORS",
    "Finished",
    "NewJob",
    "Outcome",
    "Pruned",
    "Store",
    "WebhookBatch",
    "make_engine",
    "new_id",
    "retrying",
    "safe_url",
]


class Store(JobWrites, JobReads, Bulks, Sweeps, Webhooks, Receipts, Heartbeats, Retention):
    """Reads and writes jobs and results; every method is one short transaction."""

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Store:
        return cls(make_engine(url, **kwargs))
