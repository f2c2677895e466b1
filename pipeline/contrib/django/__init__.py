"""flexpipe in a Django project: add ``"flexpipe.contrib.django"`` to ``INSTALLED_APPS``.

Settings come from one ``FLEXPIPE = {...}`` dict in settings.py, keyed like flexpipe's
settings without the prefix (``{"BROKER_URL": ..., "MODEL": ...}``); ``FLEXPIPE_*``
environment variables fill in what it leaves out. flexpipe's tables live in the
project's database ``FLEXPIPE["DATABASE"]`` (an alias, default ``"default"``) unless
``DATABASE_URL`` names one of their own; ``manage.py migrate`` brings them up to date.
The admin shows jobs, results and bulk jobs; :func:`enqueue_on_commit` enqueues once the
current transaction commits. The webhook receiver is a view: include
``flexpipe.contrib.django.urls`` at the URL registered with the provider.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def enqueue_on_commit(
    *args: Any,
    using: str | None = None,
    then: Callable[[str], object] | None = None,
    **kwargs: Any,
) -> None:
    """:func:`flexpipe.enqueue` once the current transaction (of ``using``) commits.

    The request is validated now: a bad one raises :class:`flexpipe.ValidationError` here,
    inside the view, and nothing is enqueued. After the commit the job is stored and
    started, and ``then(job_id)`` is called (e.g. to save the id on your row); a rollback
    drops it. Returns nothing: the job does not exist yet. To find it later without
    ``then``, give an ``idempotency_key`` (enqueueing the same key again returns its id).
    Outside a transaction (autocommit) the job is enqueued at once.
    """
    from django.db import transaction

    from flexpipe.tasks import api

    job = api.prepare(*args, **kwargs)

    def on_commit() -> None:
        job_id = api.enqueue_prepared(job)
        if then is not None:
            then(job_id)

    transaction.on_commit(on_commit, using=using)


__all__ = ["enqueue_on_commit"]
