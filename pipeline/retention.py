"""Retention of finished jobs: how old history may get, and the prune that enforces it.

``flexpipe db prune --older-than 30d`` and the beat task (``FLEXPIPE_RETENTION``) both run
:func:`prune`: batches of short transactions until nothing older than the cutoff is left.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from flexpipe.store.retention import Pruned, Retention

_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(value: str) -> timedelta:
    """An age such as ``30d``, ``12h``, ``90m``, ``2w`` or ``3600s``.

    Raises :class:`ValueError` for anything else.
    """
    match = _AGE.fullmatch(value.strip().lower())
    if not match:
        raise ValueError(f"{value!r} is not an age like 30d, 12h, 90m, 2w")
    return timedelta(seconds=float(match[1]) * _UNIT[match[2]])


def prune(
    store: Retention,
    older_than: timedelta,
    *,
    batch: int = 1000,
    pause: float = 0.0,
    now: datetime | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Pruned:
    """Delete the finished jobs (then bulks) that ended more than ``older_than`` ago.

    Runs ``batch`` jobs per transaction, ``pause`` s apart, so workers writing at the same
    time wait for one short transaction at most. Jobs whose callback is still due, and jobs
    of a bulk that is open or whose completion callback is due, are kept.
    """
    cutoff = (now or datetime.now(UTC)) - older_than
    total = Pruned()
    while deleted := store.prune_jobs(cutoff, limit=batch):
        total += Pruned(jobs=deleted)
        if pause:
            sleep(pause)
    while deleted := store.prune_bulks(cutoff, limit=batch):
        total += Pruned(bulks=deleted)
    return total
