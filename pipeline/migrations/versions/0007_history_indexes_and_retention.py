"""indexes that stay flat with years of history; output text stored once; cascades for prune

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27 09:00:00

Upgrades a populated database in place:

- ``flexpipe list`` reads ``created_at``; ``retry --status ... --since`` and prune read
  ``(status, finished_at)``;
- every sweeper query reads a partial index of the live rows only, and no index holds a
  column a poll writes (``next_poll_at`` left ``(status, next_poll_at)``), so polls are HOT
  updates on PostgreSQL;
- the output text lives only inside ``output`` (rows whose items lacked it get one message
  item that holds it) and ``output_text`` is dropped;
- results and attempts go with their job (``ON DELETE CASCADE``);
- on PostgreSQL, ``flexpipe_jobs`` leaves 20% of each new page free (``fillfactor``), room
  for the new row version of a HOT update.

On PostgreSQL the indexes are built with plain ``CREATE INDEX`` in the migration's
transaction: writes to ``flexpipe_jobs`` wait while they build (about a minute for five
million rows here), reads do not.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

LIVE = "status IN ('pending', 'submitted', 'in_progress')"
IN_FLIGHT = "status IN ('submitted', 'in_progress')"
PENDING = "status = 'pending'"


def _where(predicate: str) -> dict[str, Any]:
    return {"postgresql_where": sa.text(predicate), "sqlite_where": sa.text(predicate)}


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"

    if postgres:  # room for a poll's new row version on its page (new pages from now on)
        op.execute("ALTER TABLE flexpipe_jobs SET (fillfactor = 80)")
    op.drop_index("ix_flexpipe_jobs_status_next_poll_at", table_name="flexpipe_jobs")
    op.drop_index("ix_flexpipe_jobs_status_deadline_at", table_name="flexpipe_jobs")
    op.drop_index("ix_flexpipe_jobs_callback_due_at", table_name="flexpipe_jobs")
    op.create_index("ix_flexpipe_jobs_created_at", "flexpipe_jobs", ["created_at"])
    op.create_index(
        "ix_flexpipe_jobs_status_finished_at", "flexpipe_jobs", ["status", "finished_at"]
    )
    op.create_index(
        "ix_flexpipe_jobs_in_flight", "flexpipe_jobs", ["submitted_at"], **_where(IN_FLIGHT)
    )
    op.create_index(
        "ix_flexpipe_jobs_pending_dispatched_at",
        "flexpipe_jobs",
        ["dispatched_at"],
        **_where(PENDING),
    )
    op.create_index(
        "ix_flexpipe_jobs_live_deadline_at", "flexpipe_jobs", ["deadline_at"], **_where(LIVE)
    )
    op.create_index(
        "ix_flexpipe_jobs_callback_due_at",
        "flexpipe_jobs",
        ["callback_due_at"],
        **_where("callback_due_at IS NOT NULL"),
    )

    op.drop_index("ix_flexpipe_bulks_on_complete_due_at", table_name="flexpipe_bulks")
    op.create_index(
        "ix_flexpipe_bulks_on_complete_due_at",
        "flexpipe_bulks",
        ["on_complete_due_at"],
        **_where("on_complete_due_at IS NOT NULL"),
    )
    op.create_index("ix_flexpipe_bulks_finished_at", "flexpipe_bulks", ["finished_at"])

    # The text moves into the items where they do not hold it already (flexpipe always
    # derived it from them, so only rows written without items need one).
    if postgres:
        op.execute(
            """
            UPDATE flexpipe_results SET output = json_build_array(json_build_object(
                'type', 'message', 'role', 'assistant', 'content', json_build_array(
                    json_build_object('type', 'output_text', 'text', output_text,
                                      'annotations', json_build_array()))))
            WHERE output_text <> '' AND (output IS NULL OR json_typeof(output) <> 'array'
                                         OR json_array_length(output) = 0)
            """
        )
    else:
        op.execute(
            """
            UPDATE flexpipe_results SET output = json_array(json_object(
                'type', 'message', 'role', 'assistant', 'content', json_array(
                    json_object('type', 'output_text', 'text', output_text,
                                'annotations', json_array()))))
            WHERE output_text <> '' AND (output IS NULL OR json_type(output) <> 'array'
                                         OR json_array_length(output) = 0)
            """
        )
    with op.batch_alter_table("flexpipe_results") as batch_op:
        batch_op.drop_column("output_text")
        batch_op.drop_constraint("fk_flexpipe_results_job_id_flexpipe_jobs", type_="foreignkey")
        batch_op.create_foreign_key(
            "fk_flexpipe_results_job_id_flexpipe_jobs",
            "flexpipe_jobs",
            ["job_id"],
            ["id"],
            ondelete="CASCADE",
        )
    with op.batch_alter_table("flexpipe_attempts") as batch_op:
        batch_op.drop_constraint("fk_flexpipe_attempts_job_id_flexpipe_jobs", type_="foreignkey")
        batch_op.create_foreign_key(
            "fk_flexpipe_attempts_job_id_flexpipe_jobs",
            "flexpipe_jobs",
            ["job_id"],
            ["id"],
            ondelete="CASCADE",
        )


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"

    with op.batch_alter_table("flexpipe_attempts") as batch_op:
        batch_op.drop_constraint("fk_flexpipe_attempts_job_id_flexpipe_jobs", type_="foreignkey")
        batch_op.create_foreign_key(
            "fk_flexpipe_attempts_job_id_flexpipe_jobs", "flexpipe_jobs", ["job_id"], ["id"]
        )
    with op.batch_alter_table("flexpipe_results") as batch_op:
        batch_op.add_column(sa.Column("output_text", sa.Text(), nullable=True))
        batch_op.drop_constraint("fk_flexpipe_results_job_id_flexpipe_jobs", type_="foreignkey")
        batch_op.create_foreign_key(
            "fk_flexpipe_results_job_id_flexpipe_jobs", "flexpipe_jobs", ["job_id"], ["id"]
        )
    if postgres:
        op.execute(
            """
            UPDATE flexpipe_results SET output_text = coalesce((
                SELECT string_agg(part ->> 'text', '')
                FROM json_array_elements(output) AS item,
                     json_array_elements(item -> 'content') AS part
                WHERE item ->> 'type' = 'message' AND part ->> 'type' = 'output_text'
            ), '')
            WHERE json_typeof(output) = 'array'
            """
        )
    else:
        op.execute(
            """
            UPDATE flexpipe_results SET output_text = coalesce((
                SELECT group_concat(json_extract(part.value, '$.text'), '')
                FROM json_each(flexpipe_results.output) AS item,
                     json_each(item.value, '$.content') AS part
                WHERE json_extract(item.value, '$.type') = 'message'
                  AND json_extract(part.value, '$.type') = 'output_text'
            ), '')
            WHERE json_type(output) = 'array'
            """
        )

    op.drop_index("ix_flexpipe_bulks_finished_at", table_name="flexpipe_bulks")
    op.drop_index("ix_flexpipe_bulks_on_complete_due_at", table_name="flexpipe_bulks")
    op.create_index(
        "ix_flexpipe_bulks_on_complete_due_at", "flexpipe_bulks", ["on_complete_due_at"]
    )

    for name in (
        "ix_flexpipe_jobs_callback_due_at",
        "ix_flexpipe_jobs_live_deadline_at",
        "ix_flexpipe_jobs_pending_dispatched_at",
        "ix_flexpipe_jobs_in_flight",
        "ix_flexpipe_jobs_status_finished_at",
        "ix_flexpipe_jobs_created_at",
    ):
        op.drop_index(name, table_name="flexpipe_jobs")
    op.create_index("ix_flexpipe_jobs_callback_due_at", "flexpipe_jobs", ["callback_due_at"])
    op.create_index(
        "ix_flexpipe_jobs_status_deadline_at", "flexpipe_jobs", ["status", "deadline_at"]
    )
    op.create_index(
        "ix_flexpipe_jobs_status_next_poll_at", "flexpipe_jobs", ["status", "next_poll_at"]
    )
    if postgres:
        op.execute("ALTER TABLE flexpipe_jobs RESET (fillfactor)")
