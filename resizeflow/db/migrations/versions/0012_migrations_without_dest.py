"""a migration that scheduling could not place has no dest

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 12:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # As in Nova, a resize or cold migration is recorded before its dest is
    # chosen; when no host can take it, it ends in error with no dest.
    with op.batch_alter_table("migrations", schema=None) as batch_op:
        batch_op.alter_column("dest_compute", existing_type=sa.String(64), nullable=True)
        batch_op.alter_column("dest_node", existing_type=sa.String(255), nullable=True)


def downgrade() -> None:
    op.execute("UPDATE migrations SET dest_compute = source_compute WHERE dest_compute IS NULL")
    op.execute("UPDATE migrations SET dest_node = source_node WHERE dest_node IS NULL")
    with op.batch_alter_table("migrations", schema=None) as batch_op:
        batch_op.alter_column("dest_node", existing_type=sa.String(255), nullable=False)
        batch_op.alter_column("dest_compute", existing_type=sa.String(64), nullable=False)
