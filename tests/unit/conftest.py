from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flexpipe.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A store on a fresh SQLite file with the tables created."""
    s = Store.from_url(f"sqlite:///{tmp_path / 'unit.db'}")
    s.create_tables()
    yield s
    s.dispose()
