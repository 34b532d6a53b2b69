"""step leases and restore points

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 04:02:53.522260
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("step_journal", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lease_expires_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("restore", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("step_journal", schema=None) as batch_op:
        batch_op.drop_column("restore")
        batch_op.drop_column("lease_expires_at")
