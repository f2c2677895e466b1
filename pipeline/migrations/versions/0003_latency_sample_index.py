"""index for the latency fit: jobs of one model and tier by submit time

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 05:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("flexpipe_jobs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_flexpipe_jobs_model_tier_submitted_at",
            ["model", "requested_tier", "submitted_at"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("flexpipe_jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_flexpipe_jobs_model_tier_submitted_at")
