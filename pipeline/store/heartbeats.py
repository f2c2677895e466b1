"""Heartbeats: one row per periodic duty (the sweeper), rewritten each time it runs."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from flexpipe.errors import ConstraintViolated
from flexpipe.schema import heartbeats
from flexpipe.store.engine import Database
from flexpipe.store.rows import aware


class Heartbeats(Database):
    """Writes and reads of ``flexpipe_heartbeats``."""

    def beat(self, name: str, host: str, pid: int) -> None:
        """Record that ``name`` ran now on ``host`` in process ``pid``."""
        values = {"beat_at": self.now(), "host": host, "pid": pid}
        with self.engine.begin() as conn:
            updated = conn.execute(
                heartbeats.update().where(heartbeats.c.name == name).values(**values)
            )
            if updated.rowcount:
                return
        try:
            with self.engine.begin() as conn:
                conn.execute(heartbeats.insert().values(name=name, **values))
        except (
            sa.exc.IntegrityError,
            ConstraintViolated,
        ):  # another process inserted it first: update instead
            with self.engine.begin() as conn:
                conn.execute(heartbeats.update().where(heartbeats.c.name == name).values(**values))

    def last_beat(self, name: str) -> tuple[datetime, str, int] | None:
        """When, on which host and in which process ``name`` last ran (None: never)."""
        query = sa.select(heartbeats.c.beat_at, heartbeats.c.host, heartbeats.c.pid).where(
            heartbeats.c.name == name
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else (aware(row[0]), str(row[1]), int(row[2]))
