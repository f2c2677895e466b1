"""The prune, run by beat every ``FLEXPIPE_RETENTION_INTERVAL`` s when ``FLEXPIPE_RETENTION``
is set: finished jobs older than that are deleted (see :mod:`flexpipe.retention`)."""

from __future__ import annotations

import logging

from flexpipe.config.celery import app
from flexpipe.retention import prune as prune_history
from flexpipe.tasks.runtime import runtime

log = logging.getLogger("flexpipe.retention")


@app.task(name="flexpipe.prune")
def prune() -> dict[str, int]:
    """One prune of the history older than ``FLEXPIPE_RETENTION``; counts of what went."""
    rt = runtime()
    settings = rt.settings
    age = settings.retention_age
    if age is None:
        return {"jobs": 0, "bulks": 0}
    pruned = prune_history(
        rt.store, age, batch=settings.retention_batch, pause=settings.retention_pause
    )
    if pruned.jobs or pruned.bulks:
        log.info("prune: %d job(s), %d bulk(s) older than %s", pruned.jobs, pruned.bulks, age)
    return {"jobs": pruned.jobs, "bulks": pruned.bulks}
