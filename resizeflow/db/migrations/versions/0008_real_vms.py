"""ports get a fixed IP from the configured subnet (IPAM in the database)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 06:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ports", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ip_address", sa.String(length=39), nullable=True))
        # Ports made before this revision keep no address (NULLs never collide).
        batch_op.create_unique_constraint("uq_ports_network_ip", ["network", "ip_address"])


def downgrade() -> None:
    with op.batch_alter_table("ports", schema=None) as batch_op:
        batch_op.drop_constraint("uq_ports_network_ip", type_="unique")
        batch_op.drop_column("ip_address")
