"""flexpipe's Celery side: the tasks (``steps``, ``sweeper``, ``schedule``), the API that
apps call (``api``, re-exported by :mod:`flexpipe`), the per-process runtime, and
:func:`register`, which puts the tasks on a host's own Celery app (``host``).

Importing this package imports nothing else; ``flexpipe.tasks.api`` builds the Celery
app's configuration on first use, not at import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flexpipe.tasks.host import check, register

__all__ = ["check", "register"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from flexpipe.tasks import host

        return getattr(host, name)
    raise AttributeError(f"module 'flexpipe.tasks' has no attribute {name!r}")
