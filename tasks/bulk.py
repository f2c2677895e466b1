"""Ready-made bulk jobs: classify texts into labels, summarise texts, and read a bulk's
results back in input order.

``classify`` sends every item as a structured-output request whose JSON Schema allows only
the given labels. flexpipe validates each answer against that schema, asks the provider
once more when an answer does not match, and fails the item as ``invalid_output`` when the
second answer does not match either. Both functions return the bulk id of
:func:`flexpipe.tasks.api.enqueue_many`, so ``get_bulk``, ``flexpipe bulk wait`` and the
``on_complete`` callback work as for any bulk job.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flexpipe.errors import JobNotFound, ValidationError
from flexpipe.models import Job, JobView, Result
from flexpipe.states import JobStatus
from flexpipe.tasks.api import enqueue_many
from flexpipe.tasks.runtime import runtime

#: Metadata key holding an item's position in the input, so results come back in order.
ITEM_KEY = "flexpipe_item"
SUMMARY_INSTRUCTIONS = "Summarise the text in two or three sentences."
#: Arguments that ``classify`` and ``summarize`` set themselves.
_RESERVED = ("schema", "schema_name", "messages")


@dataclass(frozen=True, slots=True)
class Item:
    """One item of a bulk job, as :func:`results` returns it."""

    #: Position in the input of ``classify``/``summarize`` (None for other bulk jobs).
    index: int | None
    job_id: str
    status: JobStatus
    #: The parsed label (classification items that completed), else None.
    label: str | None
    #: The output text (summary items that completed or were cut short), else None.
    summary: str | None
    #: ``"code: message"`` when the item did not complete, else None.
    error: str | None
    metadata: dict[str, str] = field(default_factory=dict)


def classify(
    items: Iterable[str | Mapping[str, Any]],
    labels: Sequence[str],
    instructions: str | None = None,
    *,
    name: str | None = None,
    on_complete: str | Mapping[str, Any] | None = None,
    **enqueue_kwargs: Any,
) -> str:
    """Classify each item into exactly one of ``labels``, as one bulk job; return its id.

    ``items`` are texts, or dicts of :func:`flexpipe.tasks.api.enqueue` arguments (e.g. ``input``
    plus ``metadata`` to find the row again, or an ``idempotency_key``). ``instructions``
    go before the list of labels. ``enqueue_kwargs`` (``model``, ``service_tier``,
    ``deadline``, ``metadata``…) apply to every item. The label is stored parsed:
    :func:`results` returns it as ``Item.label``. Raises :class:`ValidationError` naming
    the first bad argument; nothing is written then.
    """
    checked = check_labels(labels)
    _refuse_reserved(enqueue_kwargs)
    return enqueue_many(
        _numbered(items, enqueue_kwargs.pop("metadata", None)),
        name=name,
        on_complete=on_complete,
        instructions=classify_instructions(checked, instructions),
        schema=label_schema(checked),
        schema_name="classification",
        **enqueue_kwargs,
    )


def summarize(
    texts: Iterable[str | Mapping[str, Any]],
    instructions: str | None = None,
    *,
    name: str | None = None,
    on_complete: str | Mapping[str, Any] | None = None,
    **enqueue_kwargs: Any,
) -> str:
    """Summarise each text, as one bulk job; return its id.

    ``instructions`` default to :data:`SUMMARY_INSTRUCTIONS`; the rest is as for
    :func:`classify`. :func:`results` returns each summary as ``Item.summary``.
    """
    _refuse_reserved(enqueue_kwargs)
    return enqueue_many(
        _numbered(texts, enqueue_kwargs.pop("metadata", None)),
        name=name,
        on_complete=on_complete,
        instructions=instructions or SUMMARY_INSTRUCTIONS,
        **enqueue_kwargs,
    )


def results(bulk_id: str) -> list[Item]:
    """The items of a bulk job in input order, finished or not.

    Raises :class:`JobNotFound` for an unknown bulk id. Call it once the bulk finished
    (``get_bulk(bulk_id).finished``, or in its ``on_complete`` callback) to get every
    label or summary; before that, unfinished items have their live status and no output.
    """
    store = runtime().store
    bulk_id = store.resolve_bulk_id(bulk_id)
    if store.get_bulk(bulk_id) is None:
        raise JobNotFound(f"no bulk job with id {bulk_id!r}")
    items = [_item(job, result) for job, result in store.bulk_items(bulk_id)]
    return sorted(items, key=lambda item: (item.index is None, item.index or 0))


def check_labels(labels: Sequence[str]) -> list[str]:
    """Labels as a list of distinct, non-empty strings; else :class:`ValidationError`."""
    if isinstance(labels, str) or not isinstance(labels, Sequence):
        raise ValidationError("labels", "must be a list of label strings")
    checked: list[str] = []
    for label in labels:
        if not isinstance(label, str) or not label.strip():
            raise ValidationError("labels", f"{label!r} is not a non-empty string")
        if label.strip() in checked:
            raise ValidationError("labels", f"{label.strip()!r} is given twice")
        checked.append(label.strip())
    if not checked:
        raise ValidationError("labels", "give at least one label")
    return checked


def label_schema(labels: Sequence[str]) -> dict[str, Any]:
    """The JSON Schema of an answer: ``{"label": <one of labels>}`` and nothing else."""
    return {
        "type": "object",
        "properties": {"label": {"type": "string", "enum": list(labels)}},
        "required": ["label"],
        "additionalProperties": False,
    }


def classify_instructions(labels: Sequence[str], instructions: str | None = None) -> str:
    """The caller's instructions (if any), then the labels and the answer's shape."""
    rule = (
        "Classify the text into exactly one of these labels: "
        f"{json.dumps(list(labels), ensure_ascii=False)}. "
        'Answer with JSON of the form {"label": "<one of the labels>"}.'
    )
    return f"{instructions.strip()}\n\n{rule}" if instructions and instructions.strip() else rule


def _refuse_reserved(kwargs: Mapping[str, Any]) -> None:
    for key in _RESERVED:
        if key in kwargs:
            raise ValidationError(key, "is set by classify/summarize; use enqueue_many for it")


def _numbered(
    items: Iterable[str | Mapping[str, Any]], common: Mapping[str, Any] | None
) -> Iterator[dict[str, Any]]:
    """Each item as enqueue arguments whose metadata carries its position."""
    if isinstance(items, str | bytes) or not isinstance(items, Iterable):
        raise ValidationError("items", "must be a list of texts or of enqueue arguments")
    if common is not None and not isinstance(common, Mapping):
        raise ValidationError("metadata", "must be a mapping of strings to strings")
    return _numbering(items, common)


def _numbering(
    items: Iterable[str | Mapping[str, Any]], common: Mapping[str, Any] | None
) -> Iterator[dict[str, Any]]:
    """The items one at a time (a file of any length is read as a stream)."""
    for position, item in enumerate(items):
        request: dict[str, Any] = {"input": item} if isinstance(item, str) else dict(item)
        if any(key in request for key in _RESERVED):
            raise ValidationError(f"requests[{position}]", "must not set schema or messages")
        own = request.get("metadata") or {}
        if not isinstance(own, Mapping):
            raise ValidationError(f"requests[{position}].metadata", "must be a mapping")
        request["metadata"] = {**(common or {}), **own, ITEM_KEY: str(position)}
        yield request


def _item(job: Job, result: Result | None) -> Item:
    metadata = dict(job.request.metadata)
    index = metadata.pop(ITEM_KEY, None)
    label = summary = None
    if result is not None:
        if job.request.schema is not None:
            parsed = result.parsed
            if isinstance(parsed, dict) and isinstance(parsed.get("label"), str):
                label = parsed["label"]
        elif result.output_text and job.status in (JobStatus.COMPLETED, JobStatus.INCOMPLETE):
            summary = result.output_text
    return Item(
        index=int(index) if index is not None and index.isdigit() else None,
        job_id=job.id,
        status=job.status,
        label=label,
        summary=summary,
        error=JobView(job, result).error,
        metadata=metadata,
    )


__all__ = ["Item", "classify", "results", "summarize"]
