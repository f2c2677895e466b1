"""The Python API apps call: ``enqueue``, ``get``, ``wait`` and ``cancel``.

``enqueue`` validates, writes the job row, then publishes the submit task: the row exists
before any message does, so if the broker is down the sweeper submits the job later.
"""

from __future__ import annotations

import importlib
import json
import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from flexpipe.config.celery import app
from flexpipe.errors import JobNotFound, ValidationError
from flexpipe.models import Bulk, JobView, build_request, resolve_deadline
from flexpipe.states import JobStatus
from flexpipe.store import NewJob
from flexpipe.tasks.runtime import runtime

log = logging.getLogger("flexpipe.api")


def enqueue(
    input: str | Sequence[Mapping[str, Any]] | None = None,
    *,
    messages: Sequence[Mapping[str, Any]] | None = None,
    model: str | None = None,
    instructions: str | None = None,
    max_output_tokens: int | None = None,
    temperature: float | None = None,
    schema: Mapping[str, Any] | None = None,
    schema_name: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
    callback: str | Mapping[str, Any] | None = None,
    deadline: datetime | timedelta | float | None = None,
    service_tier: str | None = None,
    mode: str = "background",
    escalate: bool = False,
) -> str:
    """Validate a request, store it as a pending job and start it; return the job id.

    ``input`` is a string or Responses input items, ``messages`` Chat Completions
    messages. ``callback`` is a task name or a Celery signature, sent with the job id as
    its first argument when the job ends. ``idempotency_key``: enqueueing the same key
    again returns the first job's id and sends nothing. ``deadline`` (a datetime, a
    timedelta or seconds) defaults per tier. Raises :class:`ValidationError` naming the
    field; nothing is written or sent then.
    """
    job = prepare(
        input,
        messages=messages,
        model=model,
        instructions=instructions,
        max_output_tokens=max_output_tokens,
        temperature=temperature,
        schema=schema,
        schema_name=schema_name,
        metadata=metadata,
        idempotency_key=idempotency_key,
        callback=callback,
        deadline=deadline,
        service_tier=service_tier,
        mode=mode,
        escalate=escalate,
    )
    return enqueue_prepared(job)


def enqueue_prepared(job: NewJob) -> str:
    """Store a job made by :func:`prepare` and start it; return its id (an existing job's
    id when its idempotency key was seen before: nothing is sent then)."""
    job_id, created = runtime().store.add_job(job)
    if created:
        publish_submit(job_id)
    return job_id


def prepare(
    input: str | Sequence[Mapping[str, Any]] | None = None,
    *,
    messages: Sequence[Mapping[str, Any]] | None = None,
    model: str | None = None,
    instructions: str | None = None,
    max_output_tokens: int | None = None,
    temperature: float | None = None,
    schema: Mapping[str, Any] | None = None,
    schema_name: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
    callback: str | Mapping[str, Any] | None = None,
    deadline: datetime | timedelta | float | None = None,
    service_tier: str | None = None,
    mode: str = "background",
    escalate: bool = False,
) -> NewJob:
    """Validate one request and apply the settings' defaults; write nothing."""
    rt = runtime()
    settings = rt.settings
    tier = service_tier or settings.service_tier
    request = build_request(
        input,
        messages=messages,
        model=model or settings.model,
        instructions=instructions,
        max_output_tokens=max_output_tokens,
        temperature=temperature,
        schema=schema,
        schema_name=schema_name,
        metadata=metadata,
        service_tier=tier,
        mode=mode,
        max_input_chars=settings.max_input_chars,
    )
    if idempotency_key is not None and (
        not isinstance(idempotency_key, str) or not 0 < len(idempotency_key) <= 255
    ):
        raise ValidationError("idempotency_key", "must be a string of 1-255 characters")
    now = rt.store.now()
    deadline_at = resolve_deadline(
        deadline if deadline is not None else settings.deadline_for(tier) * settings.time_scale,
        now,
    )
    return NewJob(
        request=request,
        idempotency_key=idempotency_key,
        callback=resolve_callback(callback),
        deadline_at=deadline_at,
        escalate=bool(escalate),
    )


def enqueue_many(
    requests: Iterable[str | Mapping[str, Any]],
    *,
    name: str | None = None,
    on_complete: str | Mapping[str, Any] | None = None,
    **defaults: Any,
) -> str:
    """Enqueue many jobs as one bulk job; return the bulk id.

    Each request is an input string or a dict of :func:`enqueue` arguments; ``defaults``
    (any :func:`enqueue` argument) apply to every item. ``on_complete`` (a task name or
    signature) is sent with the bulk id exactly once, when the last item ends, whatever
    order they end in. Every item is validated before anything is written: a bad one
    raises :class:`ValidationError` naming it (``requests[3].model: ...``).

    ``requests`` is read as a stream, inside the one transaction that writes the bulk, so
    a generator over a file of any length costs the memory of one chunk of rows.
    """

    def prepared() -> Iterator[NewJob]:
        for position, item in enumerate(requests):
            kwargs = {**defaults, **({"input": item} if isinstance(item, str) else dict(item))}
            try:
                job = prepare(**kwargs)
            except ValidationError as exc:
                raise ValidationError(f"requests[{position}].{exc.field}", exc.reason) from None
            except TypeError as exc:
                raise ValidationError(f"requests[{position}]", str(exc)) from None
            yield job

    rt = runtime()
    callback = resolve_callback(on_complete)
    bulk_id, pairs = rt.store.add_bulk(prepared(), name=name, on_complete=callback)
    publish_submits([job_id for job_id, created in pairs if created])
    return bulk_id


def get_bulk(bulk_id: str) -> Bulk:
    """A bulk job's progress. Raises :class:`JobNotFound` for an unknown id."""
    bulk = runtime().store.get_bulk(bulk_id)
    if bulk is None:
        raise JobNotFound(f"no bulk job with id {bulk_id!r}")
    return bulk


def publish_submits(job_ids: Sequence[str], chunk: int = 50) -> None:
    """Publish submits for many jobs, ``chunk`` ids per message."""
    from flexpipe.tasks.steps import submit_many

    try:
        for start in range(0, len(job_ids), chunk):
            submit_many.apply_async((list(job_ids[start : start + chunk]),))
    except Exception as exc:  # the rows are safe; the sweeper submits what was not sent
        log.warning(
            "%d jobs stored; broker unavailable (%s), the sweeper will submit them",
            len(job_ids),
            exc,
        )


def publish_submit(job_id: str) -> None:
    """Publish the submit task; if the broker is down the sweeper will do it later."""
    from flexpipe.tasks.steps import submit

    try:
        submit.apply_async((job_id, 0))
    except Exception as exc:  # kombu raises many kinds; the row is safe either way
        log.warning(
            "job %s stored; broker unavailable (%s), the sweeper will submit it", job_id, exc
        )


def resolve_callback(callback: str | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Turn a task name or signature into a JSON signature dict; check the name resolves."""
    if callback is None:
        return None
    if isinstance(callback, str):
        name, args, kwargs, options = callback, (), {}, {}
    elif isinstance(callback, Mapping) and isinstance(callback.get("task"), str):
        name = callback["task"]
        args = tuple(callback.get("args") or ())
        kwargs = dict(callback.get("kwargs") or {})
        options = dict(callback.get("options") or {})
    else:
        raise ValidationError("callback", "must be a task name or a Celery signature")
    signature: dict[str, Any] = dict(app.signature(name, args=args, kwargs=kwargs, **options))
    # A signature routed to an explicit queue names a task of another app's worker: trust it.
    if not options.get("queue") and not _task_exists(name):
        raise ValidationError("callback", f"no task named {name!r} is registered or importable")
    try:
        json.dumps(signature)
    except (TypeError, ValueError) as exc:
        raise ValidationError("callback", f"signature is not JSON-serialisable: {exc}") from None
    return signature


def _task_exists(name: str) -> bool:
    if name in app.tasks:
        return True
    module_name, _, attr = name.rpartition(".")
    if not module_name:
        return False
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return False
    return hasattr(module, attr) or name in app.tasks


def get(job_id: str) -> JobView:
    """The job and its result (if finished). Raises :class:`JobNotFound`."""
    store = runtime().store
    job = store.require_job(job_id)
    result = store.get_result(job_id) if job.terminal else None
    return JobView(job, result)


def wait(job_id: str, timeout: float = 60.0, interval: float = 0.2) -> JobView:
    """Block until the job is terminal (reading SQL); raises ``TimeoutError`` after ``timeout``."""
    end = time.monotonic() + timeout
    while True:
        view = get(job_id)
        if view.terminal:
            return view
        if time.monotonic() >= end:
            raise TimeoutError(f"job {job_id} is still {view.status.value} after {timeout:g}s")
        time.sleep(interval)


def cancel(job_id: str) -> JobView:
    """Cancel a job now (at the provider where it supports cancel) and return it."""
    from flexpipe.tasks.steps import follow

    rt = runtime()
    rt.store.require_job(job_id)
    follow(job_id, rt.flow.cancel(job_id))
    return get(job_id)


#: Statuses a job can be redriven from.
REDRIVABLE = (JobStatus.FAILED, JobStatus.EXPIRED, JobStatus.CANCELLED, JobStatus.INCOMPLETE)


def retry(job_id: str) -> int:
    """Resubmit a failed, expired, cancelled or incomplete job as a new attempt of the same
    job (its history stays in the attempts table); return the new attempt number."""
    rt = runtime()
    job = rt.store.require_job(job_id)
    attempt = rt.store.restart(job_id, reason="redriven", only_from=REDRIVABLE)
    if attempt is None:
        raise ValidationError(
            "job",
            f"job {job_id} is {job.status.value}; only "
            f"{', '.join(s.value for s in REDRIVABLE)} jobs can be retried",
        )
    publish_submit(job_id)
    return attempt


def retry_all(
    statuses: Sequence[JobStatus], since: datetime | None = None, limit: int = 10_000
) -> list[str]:
    """Redrive every job in ``statuses`` that finished after ``since``; return their ids."""
    rt = runtime()
    redriven = []
    for job_id in rt.store.failed_since(statuses, since, limit):
        if rt.store.restart(job_id, reason="redriven", only_from=statuses) is not None:
            redriven.append(job_id)
    publish_submits(redriven)
    return redriven


__all__ = ["JobNotFound", "cancel", "enqueue", "enqueue_many", "get", "get_bulk", "wait"]
