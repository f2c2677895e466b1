"""The pipeline's Celery tasks. Each reads ids, calls one ``flexpipe.flow`` step, and
schedules what the step says comes next. Messages carry job ids and small integers only.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from celery import Task, signals
from celery.exceptions import SoftTimeLimitExceeded

from flexpipe.config.celery import app
from flexpipe.flow import Next, callback_id
from flexpipe.store import TRANSIENT_DB_ERRORS
from flexpipe.tasks import (
    delivery,
    messages,  # noqa: F401  (names the ids in every message's argsrepr)
)
from flexpipe.tasks.runtime import runtime

log = logging.getLogger("flexpipe.tasks")

#: Callback names no caller may give: flexpipe's own tasks and Celery's built-in ones.
RESERVED_TASKS = ("flexpipe.*", "celery.*")

#: Each task is safe to run twice: on any Celery app (flexpipe's own or a host's, see
#: ``flexpipe.tasks.register``) its message is acknowledged only once it ran, and
#: delivered again if the worker running it died.
ACKS: dict[str, Any] = {"acks_late": True, "reject_on_worker_lost": True}

#: While the database is away, or when a task ran past its soft time limit, it retries
#: itself with backoff instead of failing (a failed task's message is gone; the sweeper
#: would recover the job, but later). Inside a step, the flow turns a soft time limit into
#: a counted retry of the job itself (see ``FlowSettings.max_unexpected_errors``).
DB_RETRY: dict[str, Any] = {
    "autoretry_for": (*TRANSIENT_DB_ERRORS, SoftTimeLimitExceeded),
    "retry_backoff": 0.5,
    "retry_backoff_max": 20,
    "retry_jitter": True,
    "max_retries": 30,
    **ACKS,
}


@app.task(name="flexpipe.submit", bind=True, **DB_RETRY)
def submit(self: Task, job_id: str, failures: int = 0) -> str:
    """Send a pending job to the provider (once), then start its poll chain."""
    step = runtime().flow.submit(job_id, failures)
    if step.kind == "retry":
        raise self.retry(args=(job_id, step.failures), countdown=step.delay, max_retries=None)
    return follow(job_id, step)


@app.task(name="flexpipe.submit_many", **DB_RETRY)
def submit_many(job_ids: list[str]) -> str:
    """Submit a chunk of a bulk job; each job then runs its own poll chain.

    A first poll that comes due while the rest of the chunk is being submitted (a fast
    provider, a short learned latency) is read here once the chunk is sent, instead of
    making a message that this worker would receive at once: the same read at the same
    time or later, without a task's publish, receive and ack. Later polls are sent with
    the countdown that remains. Either way the step is fenced by its poll number, and SQL
    has its due time, so a worker lost meanwhile costs nothing the sweeper does not redo.
    """
    rt = runtime()
    flow = rt.flow
    first_polls: list[tuple[float, str, Next]] = []
    # The creates go out concurrently, each within the shared limits (Flow.submit asks the
    # limiter first, and parks the job in SQL when over a limit); what comes next is
    # decided here, in order, once each create is recorded.
    # The leases of the whole chunk are taken in one statement first.
    claimed_at = rt.store.now()
    claimed = flow.claim_many(job_ids)
    pool = _pool("submit", rt.settings.submit_concurrency)
    sends = pool.map(lambda job: (job.id, flow.send(job, claimed_at=claimed_at)), claimed)
    for job_id, step in sends:
        if step.kind == "retry":
            submit.apply_async((job_id, step.failures), countdown=step.delay)
        elif step.kind == "poll" and not step.parked:
            first_polls.append((time.monotonic() + step.delay, job_id, step))
        else:
            follow(job_id, step)
    inline = 0
    for due, job_id, step in first_polls:
        wait = due - time.monotonic()
        if wait > 0:
            poll.apply_async((job_id, step.seq, step.failures), countdown=wait)
        else:
            follow(job_id, flow.poll(job_id, step.seq, step.failures))
            inline += 1
    return f"{len(job_ids)} submitted, {inline} read at once"


@app.task(name="flexpipe.poll", **DB_RETRY)
def poll(job_id: str, seq: int, failures: int = 0) -> str:
    """Read a job's status once; store it if terminal, else schedule the next poll."""
    return follow(job_id, runtime().flow.poll(job_id, seq, failures))


@app.task(name="flexpipe.poll_many", **DB_RETRY)
def poll_many(polls: list[list[Any]]) -> str:
    """Poll many jobs in one task (the sweeper sends due polls this way): ``[[id, seq], ...]``.

    The reads run on a few threads, so a slow provider does not serialise them; each job
    then follows its own step as if polled alone.
    """
    flow = runtime().flow
    steps = list(
        _pool("poll", 8).map(lambda pair: (pair[0], flow.poll(pair[0], int(pair[1]))), polls)
    )
    for job_id, step in steps:
        follow(job_id, step)
    return f"{len(polls)} polled"


_executors: dict[str, tuple[int, int, ThreadPoolExecutor]] = {}


def _pool(name: str, threads: int) -> ThreadPoolExecutor:
    """This process's threads for ``name`` (made again after a fork, or a new size)."""
    pid = os.getpid()
    found = _executors.get(name)
    if found is None or found[0] != pid or found[1] != threads:
        executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"flexpipe-{name}")
        _executors[name] = (pid, threads, executor)
        return executor
    return found[2]


@app.task(name="flexpipe.store", **DB_RETRY)
def store(job_id: str) -> str:
    """Read a job's response now and store it if it is terminal (e.g. on a webhook)."""
    return follow(job_id, runtime().flow.refresh(job_id))


@app.task(name="flexpipe.cancel", **DB_RETRY)
def cancel(job_id: str) -> str:
    """Cancel a job (at the provider where it supports cancel)."""
    return follow(job_id, runtime().flow.cancel(job_id))


def follow(job_id: str, step: Next) -> str:
    """Do what a step asked for; return a short word for logs and Flower."""
    if step.kind == "poll":
        if not step.parked:
            poll.apply_async((job_id, step.seq, step.failures), countdown=step.delay)
        return f"poll in {step.delay:.1f}s" + (" (parked)" if step.parked else "")
    if step.kind == "retry":
        submit.apply_async((job_id, step.failures), countdown=step.delay)
        return f"retry in {step.delay:.1f}s"
    if step.kind == "submit":
        submit.apply_async((job_id, 0))
        return f"new attempt ({step.reason})"
    if step.kind == "done":
        if step.callback:
            try:
                send_callback(job_id, step.callback, step.attempt)
            except Exception:  # the outcome is stored; the sweeper re-sends due callbacks
                log.exception("job %s: callback not sent yet; the sweeper will retry", job_id)
        if step.bulk_id and step.bulk_callback:
            try:
                send_bulk_callback(step.bulk_id, step.bulk_callback)
            except Exception:
                log.exception(
                    "bulk %s: callback not sent yet; the sweeper will retry", step.bulk_id
                )
        return "done"
    log.debug("job %s: nothing to do (%s)", job_id, step.reason)
    return f"stop: {step.reason}"


def send_callback(job_id: str, callback: dict[str, Any], attempt: int) -> None:
    """Send the app's callback task with the job id as its first argument.

    Published first, recorded after: a worker lost in between leaves it due, and the
    sweeper sends it again as the same message (same task id), never as a second one.
    """
    _send(callback, job_id, callback_id(job_id, attempt))
    runtime().store.callback_sent(job_id)


def send_bulk_callback(bulk_id: str, callback: dict[str, Any]) -> None:
    """Send a bulk job's completion callback with the bulk id as its first argument."""
    _send(callback, bulk_id, callback_id(bulk_id))
    runtime().store.on_complete_sent(bulk_id)


def callback_queue(callback: dict[str, Any]) -> str:
    """The queue a callback is sent to: its signature's, else ``FLEXPIPE_CALLBACK_QUEUE``."""
    queue = (app.signature(callback).options or {}).get("queue")
    return str(queue or runtime().settings.callback_queue)


def _send(callback: dict[str, Any], first_arg: str, task_id: str) -> None:
    name = str(callback.get("task") or "")
    if not name or any(fnmatch.fnmatchcase(name, reserved) for reserved in RESERVED_TASKS):
        # Checked at enqueue; a row stored before that check existed is not obeyed.
        log.error("callback %r for %s refused: not a callback task", name, first_arg)
        return
    signature = app.signature(callback)
    signature.set(queue=callback_queue(callback))
    signature.apply_async(args=(first_arg,), task_id=task_id)


#: flexpipe's own workers record the receipt of each callback they run.
delivery.connect(app)


@signals.worker_ready.connect
def recover_spooled(**_: Any) -> None:
    """At worker start, record the response ids a process on this data dir kept but
    could not commit (see :mod:`flexpipe.spool`), and send their polls."""
    from flexpipe.config.settings import get_settings
    from flexpipe.spool import Spool

    if not Spool.in_dir(get_settings().data_dir).pending():
        return
    try:
        rt = runtime()
        for job_id, step in rt.flow.recover_spooled():
            follow(job_id, step)
    except Exception:  # the database may still be away: the next submit finds them
        log.exception("spooled response ids not recovered at start-up")
    finally:
        # Made in the main process: the pool's children build their own after the fork.
        from flexpipe.tasks import runtime as runtime_module

        runtime_module.reset()
