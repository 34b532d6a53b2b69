"""services advertise their migration address (Nova's my_ip)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 07:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
# The head when this was written; re-chain onto the newest head when merging.
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: a row written by a worker from before this revision has none,
    # and a source host then falls back to the dest's host name.
    with op.batch_alter_table("services", schema=None) as batch_op:
        batch_op.add_column(sa.Column("migration_address", sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("services", schema=None) as batch_op:
        batch_op.drop_column("migration_address")
