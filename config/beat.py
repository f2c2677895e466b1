"""The embedded beat (``flexpipe worker --beat``): its folder is made before it starts,
and the worker stops, with a non-zero exit code, if it dies.

A worker whose beat died keeps consuming but nothing sweeps: parked polls never run and
jobs stay ``in_progress`` forever. Exiting lets the supervisor (systemd, Docker, k8s)
restart the pair and shows the failure.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from celery import bootsteps
from celery.worker import state

log = logging.getLogger("flexpipe.beat")

#: The worker's exit code when its embedded beat died (EX_SOFTWARE).
EXIT_BEAT_DIED = 70


class BeatWatch(bootsteps.StartStopStep):  # type: ignore[misc]
    """Worker bootstep: make the beat schedule's folder, then watch the embedded beat."""

    label = "flexpipe beat watch"
    requires = ("celery.worker.components:Beat",)

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self._stop = threading.Event()
        schedule = getattr(worker, "schedule_filename", None)
        if kwargs.get("beat") and schedule:
            Path(schedule).resolve().parent.mkdir(parents=True, exist_ok=True)

    def start(self, worker: Any) -> None:
        beat = getattr(worker, "beat", None)
        if beat is None or not hasattr(beat, "is_alive"):
            return
        from flexpipe.config.settings import get_settings

        interval = get_settings().beat_watch_interval
        threading.Thread(
            target=self._watch, args=(beat, interval), name="flexpipe-beat-watch", daemon=True
        ).start()

    def stop(self, worker: Any) -> None:
        self._stop.set()

    def _watch(self, beat: Any, interval: float) -> None:
        # The beat process is started just after this step; give it one interval to appear.
        while not self._stop.wait(interval):
            if beat.is_alive() or self._stop.is_set():
                continue
            if getattr(beat, "exitcode", 0) is None:  # not started yet
                continue
            log.error(
                "the embedded beat died (exit code %s): stopping the worker, since nothing "
                "would sweep",
                getattr(beat, "exitcode", "?"),
            )
            state.should_stop = EXIT_BEAT_DIED
            return
