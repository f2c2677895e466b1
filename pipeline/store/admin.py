"""Whole databases: create a fresh PostgreSQL database and drop it (test stacks)."""

from __future__ import annotations

import uuid

import sqlalchemy as sa


def create_database(admin_url: str, prefix: str = "flexpipe") -> str:
    """Create an empty database named ``PREFIX_<random>`` on the server of ``admin_url``
    (a PostgreSQL URL of a user allowed to create databases); return its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def drop_database(admin_url: str, url: str) -> None:
    """Drop the database of ``url`` (made by :func:`create_database`), closing its sessions."""
    name = sa.engine.make_url(url).database
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
