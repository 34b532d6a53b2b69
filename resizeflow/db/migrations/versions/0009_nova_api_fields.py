"""fields the compute API shows at newer microversions: who asked for a migration, and
the descriptions of servers and flavors

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 06:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # 2.80 shows the user and project that asked for a migration.
    with op.batch_alter_table("migrations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("user_id", sa.String(255), nullable=True))
        batch_op.add_column(sa.Column("project_id", sa.String(255), nullable=True))
    # Migrations from before this revision did not record who asked: their
    # server's owner is recorded, the requester of most resizes.
    op.execute(
        "UPDATE migrations SET "
        "user_id = (SELECT i.user_id FROM instances i WHERE i.uuid = migrations.instance_uuid), "
        "project_id = (SELECT i.project_id FROM instances i "
        "WHERE i.uuid = migrations.instance_uuid)"
    )
    # 2.19: the description given at boot.
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("description", sa.String(255), nullable=True))
    # 2.55: a flavor's description.
    with op.batch_alter_table("flavors", schema=None) as batch_op:
        batch_op.add_column(sa.Column("description", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("flavors", schema=None) as batch_op:
        batch_op.drop_column("description")
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_column("description")
    with op.batch_alter_table("migrations", schema=None) as batch_op:
        batch_op.drop_column("project_id")
        batch_op.drop_column("user_id")
