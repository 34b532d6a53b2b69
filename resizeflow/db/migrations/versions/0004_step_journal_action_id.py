"""step journal rows know their instance action, and count the step's applications

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("step_journal", schema=None) as batch_op:
        batch_op.add_column(sa.Column("action_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            "fk_step_journal_action_id", "instance_actions", ["action_id"], ["id"]
        )
        batch_op.add_column(sa.Column("applied", sa.Integer(), nullable=False, server_default="0"))
    op.execute("UPDATE step_journal SET applied = 1 WHERE status = 'done'")
    # Rows planned before this revision: the newest action of their request id,
    # which is the one the steps used to look up.
    op.execute(
        "UPDATE step_journal SET action_id = (SELECT max(a.id) FROM instance_actions a "
        "WHERE a.request_id = step_journal.request_id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("step_journal", schema=None) as batch_op:
        batch_op.drop_column("applied")
        batch_op.drop_constraint("fk_step_journal_action_id", type_="foreignkey")
        batch_op.drop_column("action_id")
