"""A worker that stops because of an error exits, whatever its pool children do.

Celery stops a worker on an "Unrecoverable error" (for one, Redis refusing an ack with
``OOM command not allowed``: kombu's transport lets ``OutOfMemoryError`` escape) with a
warm shutdown, which waits for the pool. Children blocked writing to their result pipes
never finish, and the main process then waits for ever: alive, consuming nothing, and
not restarted by any supervisor (issue 15 §2). Here a failing stop starts a timer:
after ``FLEXPIPE_WORKER_EXIT_GRACE`` seconds the children are killed and the process
exits with the stop's code, so the supervisor restarts it. Messages it held come back
(late acks), and the sweeper re-sends from SQL whatever Redis lost.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("flexpipe.worker")

_MARK = "_flexpipe_exit_guard"


def install(grace_s: float) -> None:
    """Wrap ``WorkController.stop`` once (idempotent)."""
    from celery.worker.worker import WorkController

    original: Callable[..., Any] = WorkController.stop
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def stop(self: Any, in_sighandler: bool = False, exitcode: int | None = None) -> Any:
        if exitcode:
            arm(exitcode, grace_s)
        return original(self, in_sighandler=in_sighandler, exitcode=exitcode)

    setattr(stop, _MARK, True)
    WorkController.stop = stop


def arm(exitcode: int, grace_s: float) -> threading.Timer:
    """Exit with ``exitcode`` in ``grace_s`` seconds unless the process is gone by then."""

    def force() -> None:
        log.critical(
            "worker still alive %.0fs after an unrecoverable error; killing its pool and "
            "exiting with %d", grace_s, exitcode,
        )
        from billiard import process

        for child in process.active_children():
            if child.pid:
                with contextlib.suppress(OSError):
                    os.kill(child.pid, signal.SIGKILL)
        logging.shutdown()
        os._exit(exitcode)

    timer = threading.Timer(grace_s, force)
    timer.daemon = True
    timer.start()
    return timer
