"""volumes of the block-storage service; attachments as Cinder's

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 13:30:00.000000
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "volumes",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("description", sa.String(length=255), nullable=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attach_status", sa.String(length=16), nullable=False),
        sa.Column("storage_host", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("volumes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_volumes_project_id"), ["project_id"], unique=False)

    with op.batch_alter_table("volume_attachments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attachment_id", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("attach_status", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("attach_mode", sa.String(length=4), nullable=True))
        batch_op.add_column(sa.Column("connector", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("created_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("attached_at", sa.DateTime(), nullable=True))
        batch_op.alter_column("device", existing_type=sa.String(length=32), nullable=True)
    # Attachments recorded before: each gets an id; one connected to a host was attached.
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT id, connected_host FROM volume_attachments")).all()
    for row_id, host in rows:
        conn.execute(
            sa.text(
                "UPDATE volume_attachments SET attachment_id = :a, attach_status = :s, "
                "attach_mode = 'rw', created_at = CURRENT_TIMESTAMP WHERE id = :i"
            ),
            {"a": str(uuid.uuid4()), "s": "attached" if host else "reserved", "i": row_id},
        )
    with op.batch_alter_table("volume_attachments", schema=None) as batch_op:
        for column, length in (("attachment_id", 36), ("attach_status", 16), ("attach_mode", 4)):
            batch_op.alter_column(column, existing_type=sa.String(length=length), nullable=False)
        batch_op.alter_column("created_at", existing_type=sa.DateTime(), nullable=False)
        batch_op.create_unique_constraint("uq_volume_attachments_attachment_id", ["attachment_id"])
        batch_op.create_index(
            batch_op.f("ix_volume_attachments_volume_id"), ["volume_id"], unique=False
        )


def downgrade() -> None:
    op.execute("UPDATE volume_attachments SET device = '/dev/vdb' WHERE device IS NULL")
    with op.batch_alter_table("volume_attachments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_volume_attachments_volume_id"))
        batch_op.drop_constraint("uq_volume_attachments_attachment_id", type_="unique")
        batch_op.alter_column("device", existing_type=sa.String(length=32), nullable=False)
        for column in (
            "attached_at",
            "created_at",
            "connector",
            "attach_mode",
            "attach_status",
            "attachment_id",
        ):
            batch_op.drop_column(column)
    with op.batch_alter_table("volumes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_volumes_project_id"))
    op.drop_table("volumes")
