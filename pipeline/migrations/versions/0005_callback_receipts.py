"""callback receipts: when a worker received each callback, and which queues record that

Revision ID: 0005
Revises: 0004_webhooks
Create Date: 2026-12-01 23:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004_webhooks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("flexpipe_jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("callback_received_at", sa.DateTime(timezone=True)))
        batch_op.create_index(
            "ix_flexpipe_jobs_callback_received_at",
            ["callback_received_at", "callback_sent_at"],
            unique=False,
        )
    with op.batch_alter_table("flexpipe_bulks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("on_complete_received_at", sa.DateTime(timezone=True)))
    op.create_table(
        "flexpipe_receivers",
        sa.Column("queue", sa.String(length=255), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("queue", name=op.f("pk_flexpipe_receivers")),
    )


def downgrade() -> None:
    op.drop_table("flexpipe_receivers")
    with op.batch_alter_table("flexpipe_bulks", schema=None) as batch_op:
        batch_op.drop_column("on_complete_received_at")
    with op.batch_alter_table("flexpipe_jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_flexpipe_jobs_callback_received_at")
        batch_op.drop_column("callback_received_at")
