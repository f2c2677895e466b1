"""What flexpipe's task messages say about themselves: an ``argsrepr`` that names what
each id means, for Flower and worker logs.

Celery shows a message's ``argsrepr`` wherever it shows arguments (Flower's task list,
``celery events``, the worker's "Task received" line). By default that is ``repr(args)``:
``('5f0c…', 3, 0)``. Here every message flexpipe publishes, from any process that imported
flexpipe, says ``job 5f0c… poll 3`` instead, through Celery's ``before_task_publish``
signal, so no publishing call has to remember it. The by-name ``flexpipe.enqueue`` task
shows only the names of its arguments, never the prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from celery import signals

#: How many of a many-job message's jobs are named; the rest are counted.
NAMED = 3


def _submit(args: Sequence[Any]) -> str:
    failures = int(args[1]) if len(args) > 1 else 0
    return f"job {args[0]} submit" + (f" after {failures} failures" if failures else "")


def _poll(args: Sequence[Any]) -> str:
    failures = int(args[2]) if len(args) > 2 else 0
    return f"job {args[0]} poll {args[1]}" + (f" after {failures} failures" if failures else "")


def _poll_many(args: Sequence[Any]) -> str:
    polls = list(args[0])
    named = ", ".join(f"job {job_id} poll {seq}" for job_id, seq in polls[:NAMED])
    return f"{len(polls)} polls: {named}" + _more(len(polls))


def _submit_many(args: Sequence[Any]) -> str:
    job_ids = list(args[0])
    named = ", ".join(f"job {job_id}" for job_id in job_ids[:NAMED])
    return f"{len(job_ids)} submits: {named}" + _more(len(job_ids))


def _job(verb: str) -> Callable[[Sequence[Any]], str]:
    return lambda args: f"job {args[0]} {verb}"


def _more(count: int) -> str:
    return f" and {count - NAMED} more" if count > NAMED else ""


#: Task name → the text of its positional arguments.
DESCRIBE: dict[str, Callable[[Sequence[Any]], str]] = {
    "flexpipe.submit": _submit,
    "flexpipe.poll": _poll,
    "flexpipe.poll_many": _poll_many,
    "flexpipe.submit_many": _submit_many,
    "flexpipe.store": _job("store"),
    "flexpipe.cancel": _job("cancel"),
}


def describe(task: str, args: Sequence[Any]) -> str | None:
    """The ``argsrepr`` of a flexpipe task's message, or None to keep Celery's own."""
    describer = DESCRIBE.get(task)
    if describer is None or not args:
        return None
    try:
        return describer(args)
    except (TypeError, ValueError, IndexError):  # arguments of another shape: say nothing new
        return None


@signals.before_task_publish.connect(weak=False)
def _name_the_ids(
    sender: str | None = None,
    headers: dict[str, Any] | None = None,
    body: Any = None,
    **_: Any,
) -> None:
    """Rewrite ``argsrepr`` (and the enqueue task's ``kwargsrepr``) of flexpipe's messages."""
    if headers is None or not isinstance(sender, str) or not sender.startswith("flexpipe."):
        return
    if sender == "flexpipe.enqueue":
        kwargs = body[1] if isinstance(body, tuple | list) and len(body) > 1 else {}
        names = ", ".join(sorted(kwargs)) if isinstance(kwargs, dict) else ""
        headers["kwargsrepr"] = f"request with {names}" if names else "request"
        headers["argsrepr"] = "()"
        return
    args = body[0] if isinstance(body, tuple | list) and body else ()
    text = describe(sender, args)
    if text is not None:
        headers["argsrepr"] = text
