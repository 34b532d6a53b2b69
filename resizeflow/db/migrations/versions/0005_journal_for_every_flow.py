"""the step journal records instance operations too, and keeps superseded rows

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 07:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_LIVE = "status != 'superseded'"


def upgrade() -> None:
    with op.batch_alter_table("step_journal", schema=None) as batch_op:
        batch_op.add_column(sa.Column("instance_uuid", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("holder", sa.String(length=32), nullable=True))
    op.execute(
        "UPDATE step_journal SET instance_uuid = (SELECT m.instance_uuid FROM migrations m "
        "WHERE m.id = step_journal.migration_id)"
    )
    with op.batch_alter_table("step_journal", schema=None) as batch_op:
        batch_op.alter_column("instance_uuid", existing_type=sa.String(36), nullable=False)
        batch_op.alter_column("migration_id", existing_type=sa.Integer(), nullable=True)
        batch_op.alter_column(
            "status", existing_type=sa.String(16), type_=sa.String(32), nullable=False
        )
        batch_op.drop_constraint("uq_step_journal", type_="unique")
        batch_op.create_index("ix_step_journal_instance", ["instance_uuid", "step"])
    # Outside the batch: SQLite's table copy would lose the partial WHERE.
    op.create_index(
        "uq_step_journal_live",
        "step_journal",
        ["migration_id", "step"],
        unique=True,
        sqlite_where=sa.text(_LIVE),
        postgresql_where=sa.text(_LIVE),
    )


def downgrade() -> None:
    op.execute("DELETE FROM step_journal WHERE migration_id IS NULL OR status = 'superseded'")
    op.drop_index("uq_step_journal_live", table_name="step_journal")
    with op.batch_alter_table("step_journal", schema=None) as batch_op:
        batch_op.drop_index("ix_step_journal_instance")
        batch_op.create_unique_constraint("uq_step_journal", ["migration_id", "step"])
        batch_op.alter_column(
            "status", existing_type=sa.String(32), type_=sa.String(16), nullable=False
        )
        batch_op.alter_column("migration_id", existing_type=sa.Integer(), nullable=False)
        batch_op.drop_column("holder")
        batch_op.drop_column("instance_uuid")
