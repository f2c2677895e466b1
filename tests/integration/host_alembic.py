"""A host application's own Alembic environment (as Flask-Migrate lays it out), with one
revision, ``465e62b1a1be``, that creates a ``host_users`` table in ``alembic_version``'s
default namespace. Tests write it into a folder and migrate with it beside flexpipe."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

HOST_REVISION = "465e62b1a1be"

ENV = '''
import sqlalchemy as sa
from alembic import context
from sqlalchemy import create_engine, pool

config = context.config
metadata = sa.MetaData()
sa.Table("host_users", metadata, sa.Column("id", sa.Integer, primary_key=True))


def include_name(name, type_, parent_names):
    # What docs/deploy.md tells a host sharing flexpipe's schema: leave flexpipe_* alone.
    skip = config.attributes.get("skip_flexpipe", True)
    return not (skip and type_ == "table" and name.startswith("flexpipe_"))


engine = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(
        connection=connection, target_metadata=metadata, include_name=include_name
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
'''

REVISION = f'''
import sqlalchemy as sa
from alembic import op

revision = "{HOST_REVISION}"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("host_users", sa.Column("id", sa.Integer, primary_key=True))


def downgrade():
    op.drop_table("host_users")
'''


def host_config(folder: Path, url: str, *, skip_flexpipe: bool = True) -> Config:
    """Write the host's Alembic environment into ``folder`` and return its config."""
    (folder / "versions").mkdir(parents=True, exist_ok=True)
    (folder / "env.py").write_text(ENV)
    (folder / "script.py.mako").write_text("")
    (folder / "versions" / f"{HOST_REVISION}_users.py").write_text(REVISION)
    config = Config()
    config.set_main_option("script_location", str(folder))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["skip_flexpipe"] = skip_flexpipe
    return config


def host_upgrade(folder: Path, url: str) -> None:
    command.upgrade(host_config(folder, url), "head")


def host_check(folder: Path, url: str, *, skip_flexpipe: bool = True) -> None:
    """What ``flask db migrate`` does: read the current revision (it raises when the
    database records one it does not know) and autogenerate against the host's models."""
    command.check(host_config(folder, url, skip_flexpipe=skip_flexpipe))
