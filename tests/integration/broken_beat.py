"""A beat scheduler that dies at its first tick, for the test that a worker whose embedded
beat died does not keep running half alive."""

from __future__ import annotations

from typing import Any

from celery.beat import PersistentScheduler


class DyingScheduler(PersistentScheduler):
    def tick(self, *args: Any, **kwargs: Any) -> float:
        raise RuntimeError("this beat dies on purpose")
