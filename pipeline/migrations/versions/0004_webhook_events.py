"""webhook events (dedupe by webhook-id) and the jobs' response id index

Revision ID: 0004_webhooks
Revises: 0003
Create Date: 2026-11-27 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_webhooks"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "flexpipe_webhook_events",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=True),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("object_id", sa.String(length=128), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flexpipe_webhook_events")),
    )
    with op.batch_alter_table("flexpipe_webhook_events", schema=None) as batch_op:
        batch_op.create_index("ix_flexpipe_webhook_events_object_id", ["object_id"])
        batch_op.create_index(
            "ix_flexpipe_webhook_events_handled_at_received_at", ["handled_at", "received_at"]
        )
    with op.batch_alter_table("flexpipe_jobs", schema=None) as batch_op:
        batch_op.create_index("ix_flexpipe_jobs_response_id", ["response_id"])


def downgrade() -> None:
    with op.batch_alter_table("flexpipe_jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_flexpipe_jobs_response_id")
    op.drop_table("flexpipe_webhook_events")
