"""The Python API apps call: ``enqueue``, ``get``, ``wait`` and ``cancel``.

``enqueue`` validates, writes the job row, then publishes the submit task: the row exists
before any message does, so if the broker is down the sweeper submits the job later.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, Unpack

from flexpipe.config.celery import app
from flexpipe.errors import IdempotencyConflict, JobNotFound, ValidationError
from flexpipe.models import (
    Bulk,
    EnqueueArgs,
    Job,
    JobView,
    build_request,
    check_fields,
    check_json,
    check_text,
    resolve_deadline,
)
from flexpipe.states import JobStatus
from flexpipe.store import NewJob
from flexpipe.tasks.runtime import runtime
from flexpipe.tasks.steps import RESERVED_TASKS, follow, submit, submit_many

log = logging.getLogger("flexpipe.api")

#: Signature options a callback may carry (routing and timing, nothing that chains tasks).
CALLBACK_OPTIONS = frozenset(
    {"queue", "routing_key", "exchange", "priority", "countdown", "expires",
     "soft_time_limit", "time_limit"}
)


def enqueue(
    input: str | Sequence[Mapping[str, Any]] | None = None, **request: Unpack[EnqueueArgs]
) -> str:
    """Validate a request, store it as a pending job and start it; return the job id.

    ``enqueue(input, *, messages, model, instructions, max_output_tokens, temperature,
    schema, schema_name, metadata, idempotency_key, callback, deadline, service_tier,
    mode, escalate)`` (see :class:`~flexpipe.models.EnqueueArgs`). ``input`` is a string
    or Responses input items, ``messages`` Chat Completions messages. ``callback`` is a
    task name or a Celery signature, sent with the job id as its first argument when the
    job ends; it must be a task registered in this process or match
    ``FLEXPIPE_CALLBACKS``. ``idempotency_key``: enqueueing the same request with the same
    key again returns the first job's id and sends nothing; a different request with a
    used key raises :class:`~flexpipe.errors.IdempotencyConflict`. ``deadline`` (a
    datetime, a timedelta or seconds) defaults per tier. Raises :class:`ValidationError`
    naming the field; nothing is written or sent then.
    """
    return enqueue_prepared(prepare(input, **request))


def enqueue_prepared(job: NewJob) -> str:
    """Store a job made by :func:`prepare` and start it; return its id (an existing job's
    id when its idempotency key was seen before for the same request: nothing is sent
    then). Raises :class:`IdempotencyConflict` when the key was used for another request."""
    store = runtime().store
    job_id, created = store.add_job(job)
    if created:
        publish_submit(job_id)
    else:
        _same_request(store.require_job(job_id), job, "idempotency_key")
    return job_id


def prepare(
    input: str | Sequence[Mapping[str, Any]] | None = None, **request: Unpack[EnqueueArgs]
) -> NewJob:
    """Validate one request and apply the settings' defaults; write nothing."""
    check_fields(request)
    args: dict[str, Any] = dict(request)
    rt = runtime()
    settings = rt.settings
    tier = args.get("service_tier")
    tier = settings.service_tier if tier is None else tier
    model = args.get("model")
    built = build_request(
        input,
        messages=args.get("messages"),
        model=settings.model if model is None else model,
        instructions=args.get("instructions"),
        max_output_tokens=args.get("max_output_tokens"),
        temperature=args.get("temperature"),
        schema=args.get("schema"),
        schema_name=args.get("schema_name"),
        metadata=args.get("metadata"),
        service_tier=tier,
        mode=args.get("mode", "background"),
        max_input_chars=settings.max_input_chars,
        max_output_tokens_limit=settings.max_output_length,
        max_nesting=settings.max_nesting,
    )
    key = args.get("idempotency_key")
    if key is not None:
        check_text(key, "idempotency_key")
        if not 0 < len(key) <= 255:
            raise ValidationError("idempotency_key", "must be a string of 1-255 characters")
    escalate = args.get("escalate", False)
    if not isinstance(escalate, bool):
        raise ValidationError("escalate", "must be True or False")
    deadline = args.get("deadline")
    deadline_at = resolve_deadline(
        deadline if deadline is not None else settings.deadline_for(tier) * settings.time_scale,
        rt.store.now(),
        settings.max_deadline,
    )
    return NewJob(
        request=built,
        idempotency_key=key,
        callback=resolve_callback(args.get("callback")),
        deadline_at=deadline_at,
        escalate=escalate,
    )


def enqueue_many(
    requests: Iterable[str | Mapping[str, Any]],
    *,
    name: str | None = None,
    on_complete: str | Mapping[str, Any] | None = None,
    **defaults: Unpack[EnqueueArgs],
) -> str:
    """Enqueue many jobs as one bulk job; return the bulk id.

    Each request is an input string or a dict of :func:`enqueue` arguments; ``defaults``
    (any :func:`enqueue` argument) apply to every item. ``on_complete`` (a task name or
    signature) is sent with the bulk id exactly once, when the last item ends, whatever
    order they end in. Every item is validated before anything is written: a bad one
    raises :class:`ValidationError` naming it (``requests[3].model: ...``), as do an
    empty bulk and two items with the same idempotency key. An item whose key an earlier
    job used for another request raises :class:`IdempotencyConflict`.

    ``requests`` is read as a stream, inside the one transaction that writes the bulk (a
    bad item rolls it all back), so a generator over a file of any length costs the
    memory of one chunk of rows.
    """
    check_fields(defaults)
    check_text(name, "name")
    if isinstance(requests, str | bytes | Mapping):
        raise ValidationError("requests", "must be an iterable of requests")
    callback = resolve_callback(on_complete, "on_complete")
    rt = runtime()

    def prepared() -> Iterator[NewJob]:
        positions: dict[str, int] = {}
        count = 0
        for position, item in enumerate(requests):
            where = f"requests[{position}]"
            if isinstance(item, str):
                kwargs: dict[str, Any] = {**defaults, "input": item}
            elif isinstance(item, Mapping):
                check_fields(item, f"{where}.")
                kwargs = {**defaults, **item}
            else:
                raise ValidationError(where, "must be an input string or a dict of arguments")
            try:
                job = prepare(**kwargs)
            except ValidationError as exc:
                raise ValidationError(f"{where}.{exc.field}", exc.reason) from None
            key = job.idempotency_key
            if key is not None:
                if key in positions:
                    raise ValidationError(
                        f"{where}.idempotency_key",
                        f"{key!r} is also the key of requests[{positions[key]}]",
                    )
                positions[key] = position
                _check_known_key(job, where)
            count += 1
            yield job
        if not count:
            raise ValidationError("requests", "is empty: a bulk job needs at least one request")

    bulk_id, pairs = rt.store.add_bulk(prepared(), name=name, on_complete=callback)
    publish_submits([job_id for job_id, created in pairs if created])
    return bulk_id


def _check_known_key(job: NewJob, where: str) -> None:
    """Before a bulk is committed: an item whose key is already used must be the same
    request as the job that used it."""
    store = runtime().store
    assert job.idempotency_key is not None
    for job_id in store.jobs_for_keys([job.idempotency_key]).values():
        _same_request(store.require_job(job_id), job, where)


def _same_request(existing: Job, new: NewJob, where: str) -> None:
    """Raise :class:`IdempotencyConflict` unless ``new`` asks for what ``existing`` was
    asked for (the request, callback and escalation; deadlines are relative, so not them).
    An escalated job changed its tier itself, so the tier is not compared then."""
    stored = existing.request
    request = new.request
    if existing.escalate:
        request = replace(request, service_tier=stored.service_tier)
    if (
        _fingerprint(stored.to_json(), existing.callback, existing.escalate)
        != _fingerprint(request.to_json(), new.callback, new.escalate)
    ):
        raise IdempotencyConflict(
            where,
            f"key {new.idempotency_key!r} was used by job {existing.id} for another request",
        )


def _fingerprint(request: dict[str, Any], callback: Any, escalate: bool) -> str:
    """A stable text of a normalised request (keys sorted), for comparing two requests."""
    return json.dumps([request, callback, escalate], sort_keys=True, separators=(",", ":"))


def get_bulk(bulk_id: str) -> Bulk:
    """A bulk job's progress. ``bulk_id`` may be any unique prefix of 8 or more
    characters. Raises :class:`JobNotFound` for an unknown id."""
    store = runtime().store
    bulk = store.get_bulk(store.resolve_bulk_id(bulk_id))
    if bulk is None:
        raise JobNotFound(f"no bulk job with id {bulk_id!r}")
    return bulk


def publish_submits(job_ids: Sequence[str], chunk: int = 50) -> None:
    """Publish submits for many jobs, ``chunk`` ids per message."""
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
    try:
        submit.apply_async((job_id, 0))
    except Exception as exc:  # kombu raises many kinds; the row is safe either way
        log.warning(
            "job %s stored; broker unavailable (%s), the sweeper will submit it", job_id, exc
        )


def resolve_callback(
    callback: str | Mapping[str, Any] | None, field: str = "callback"
) -> dict[str, Any] | None:
    """Turn a task name or signature into a JSON signature dict, and check the name.

    A callback must name a task registered in this process (on flexpipe's Celery app or
    the host's current one) or match a ``FLEXPIPE_CALLBACKS`` pattern; flexpipe's and
    Celery's own tasks are refused whatever the signature's options say. Nothing is
    imported: a name is only ever compared.
    """
    if callback is None:
        return None
    settings = runtime().settings
    if isinstance(callback, str):
        name: object = callback
        args: object = ()
        kwargs: object = {}
        options: object = {}
    elif isinstance(callback, Mapping):
        name = callback.get("task")
        args = callback.get("args") or ()
        kwargs = callback.get("kwargs") or {}
        options = callback.get("options") or {}
    else:
        raise ValidationError(field, "must be a task name or a Celery signature")
    if not isinstance(name, str) or not name:
        raise ValidationError(field, "must be a task name or a Celery signature")
    check_text(name, field)
    if not isinstance(args, list | tuple) or not isinstance(kwargs, Mapping):
        raise ValidationError(field, "args must be a list and kwargs a mapping")
    if not isinstance(options, Mapping):
        raise ValidationError(field, "options must be a mapping")
    for option in options:
        if option not in CALLBACK_OPTIONS:
            raise ValidationError(field, f"option {option!r} is not allowed in a callback")
    check_json([list(args), dict(kwargs), dict(options)], field, settings.max_nesting)
    if not callback_allowed(name, settings.callback_patterns):
        raise ValidationError(
            field,
            f"{name!r} is not a task registered in this process, nor allowed by "
            "FLEXPIPE_CALLBACKS",
        )
    signature: dict[str, Any] = dict(
        app.signature(name, args=tuple(args), kwargs=dict(kwargs), **dict(options))
    )
    try:
        json.dumps(signature, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationError(field, f"signature is not JSON-serialisable: {exc}") from None
    return signature


def callback_allowed(name: str, patterns: Sequence[str]) -> bool:
    """Whether a callback may name ``name``: never a reserved task; else one registered on
    flexpipe's Celery app, the current one or the host's (``flexpipe.tasks.register``), or
    one matching ``patterns`` (fnmatch)."""
    if any(fnmatch.fnmatchcase(name, reserved) for reserved in RESERVED_TASKS):
        return False
    if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
        return True
    from celery import current_app

    from flexpipe.config.celery import host

    return any(name in each.tasks for each in (app, current_app, host()) if each is not None)


def get(job_id: str) -> JobView:
    """The job and its result (if finished). ``job_id`` may be any unique prefix of 8 or
    more characters, as in git. Raises :class:`JobNotFound` (:class:`AmbiguousId` when a
    prefix matches several jobs)."""
    store = runtime().store
    job = store.require_job(store.resolve_job_id(job_id))
    result = store.get_result(job.id) if job.terminal else None
    return JobView(job, result)


def wait(job_id: str, timeout: float = 60.0, interval: float = 0.2) -> JobView:
    """Block until the job is terminal (reading SQL); raises ``TimeoutError`` after ``timeout``."""
    end = time.monotonic() + timeout
    job_id = runtime().store.resolve_job_id(job_id)
    while True:
        view = get(job_id)
        if view.terminal:
            return view
        if time.monotonic() >= end:
            raise TimeoutError(f"job {job_id} is still {view.status.value} after {timeout:g}s")
        time.sleep(interval)


def cancel(job_id: str) -> JobView:
    """Cancel a job now (at the provider where it supports cancel) and return it."""
    rt = runtime()
    job_id = rt.store.require_job(rt.store.resolve_job_id(job_id)).id
    follow(job_id, rt.flow.cancel(job_id))
    return get(job_id)


#: Statuses a job can be redriven from.
REDRIVABLE = (JobStatus.FAILED, JobStatus.EXPIRED, JobStatus.CANCELLED, JobStatus.INCOMPLETE)


def retry(job_id: str) -> int:
    """Resubmit a failed, expired, cancelled or incomplete job as a new attempt of the same
    job (its history stays in the attempts table); return the new attempt number."""
    rt = runtime()
    job = rt.store.require_job(rt.store.resolve_job_id(job_id))
    job_id = job.id
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
