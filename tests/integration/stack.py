"""flexpipe's own test stack: :class:`flexpipe.testing.Stack` with the integration tests'
callback module (``tests.integration.callbacks``) imported by the worker and its table made."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flexpipe.testing import TIME_SCALE, emulator_call
from flexpipe.testing import Stack as BaseStack

__all__ = ["ROOT", "TIME_SCALE", "Stack", "emulator_call"]

ROOT = Path(__file__).resolve().parents[2]


class Stack(BaseStack):
    """A stack whose worker runs from the repository root and records callbacks in SQL."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("imports", "tests.integration.callbacks")
        kwargs.setdefault("cwd", ROOT)
        kwargs.setdefault("pythonpath", [ROOT])
        super().__init__(**kwargs)

    def prepare(self) -> None:
        from tests.integration import callbacks

        callbacks.create_table(self.store.engine)
