"""volume attachments carry what Nova's block device mapping says of them

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 14:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("volume_attachments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("bdm_uuid", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("tag", sa.String(length=60), nullable=True))
        batch_op.add_column(
            sa.Column(
                "delete_on_termination", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )
        batch_op.add_column(sa.Column("boot_index", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("volume_attachments", schema=None) as batch_op:
        for column in ("boot_index", "delete_on_termination", "tag", "bdm_uuid"):
            batch_op.drop_column(column)
