"""broker epochs: the broker-loss detector's record of each lifetime of the broker's data

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 09:45:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "broker_epochs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("token", sa.String(32), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("after_loss", sa.Boolean(), nullable=False),
        sa.Column("redriven", sa.Integer(), nullable=False),
        sa.Column("marked_at", sa.DateTime(), nullable=True),
        sa.UniqueConstraint("seq", name="uq_broker_epochs_seq"),
    )


def downgrade() -> None:
    op.drop_table("broker_epochs")
