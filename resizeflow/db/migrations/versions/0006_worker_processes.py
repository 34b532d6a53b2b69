"""worker processes: one heartbeat per process, aggregated per host

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 06:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "worker_processes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("host", sa.String(64), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("node", sa.String(255), nullable=False),
        sa.Column("machine", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("host", "slot", name="uq_worker_processes_host_slot"),
        sa.UniqueConstraint("node", name="uq_worker_processes_node"),
    )
    op.create_index("ix_worker_processes_host", "worker_processes", ["host"])


def downgrade() -> None:
    op.drop_index("ix_worker_processes_host", table_name="worker_processes")
    op.drop_table("worker_processes")
