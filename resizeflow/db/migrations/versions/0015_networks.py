"""networks and subnets as Neutron's; ports on them with a device and a binding host;
the hosts' VXLAN endpoints

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 17:30:00.000000

Ports recorded before carry a network *name* in ``ports.network``. Each name
becomes a network of its own (the first VNI of the default range onwards) with
one subnet, on ``RESIZEFLOW_FIXED_RANGE`` as the ports' addresses were, and
each port is bound to its server's host.
"""

from __future__ import annotations

import ipaddress
import os
import uuid

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_FIRST_VNI = 1001


def upgrade() -> None:
    op.create_table(
        "networks",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("admin_state_up", sa.Boolean(), nullable=False),
        sa.Column("shared", sa.Boolean(), nullable=False),
        sa.Column("mtu", sa.Integer(), nullable=False),
        sa.Column("segmentation_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("segmentation_id"),
    )
    with op.batch_alter_table("networks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_networks_project_id"), ["project_id"], unique=False)
    op.create_table(
        "subnets",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("network_id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("ip_version", sa.Integer(), nullable=False),
        sa.Column("cidr", sa.String(length=43), nullable=False),
        sa.Column("gateway_ip", sa.String(length=39), nullable=True),
        sa.Column("enable_dhcp", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["network_id"], ["networks.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("subnets", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_subnets_network_id"), ["network_id"], unique=False)
    op.create_table(
        "tunnel_endpoints",
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("ip_address", sa.String(length=64), nullable=False),
        sa.Column("udp_port", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("host"),
    )

    text_columns = ("subnet_id", "project_id", "name", "description", "device_id", "device_owner")
    with op.batch_alter_table("ports", schema=None) as batch_op:
        batch_op.add_column(sa.Column("network_id", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("subnet_id", sa.String(length=36), nullable=True))
        for name in text_columns[1:]:
            batch_op.add_column(
                sa.Column(name, sa.String(length=255), nullable=False, server_default="")
            )
        batch_op.add_column(
            sa.Column("admin_state_up", sa.Boolean(), nullable=False, server_default=sa.true())
        )
        batch_op.add_column(
            sa.Column("status", sa.String(length=16), nullable=False, server_default="DOWN")
        )
        batch_op.add_column(sa.Column("binding_host_id", sa.String(length=255), nullable=True))
        batch_op.add_column(
            sa.Column("preserve_on_delete", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("created_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("updated_at", sa.DateTime(), nullable=True))

    _networks_from_names()

    with op.batch_alter_table("ports", schema=None) as batch_op:
        batch_op.drop_constraint("uq_ports_network_ip", type_="unique")
        batch_op.drop_column("network")
        batch_op.alter_column("network_id", existing_type=sa.String(length=36), nullable=False)
        batch_op.alter_column("created_at", existing_type=sa.DateTime(), nullable=False)
        batch_op.alter_column("updated_at", existing_type=sa.DateTime(), nullable=False)
        batch_op.alter_column("instance_uuid", existing_type=sa.String(length=36), nullable=True)
        batch_op.create_unique_constraint("uq_ports_network_ip", ["network_id", "ip_address"])
        batch_op.create_index(batch_op.f("ix_ports_network_id"), ["network_id"], unique=False)
        batch_op.create_foreign_key("fk_ports_network_id", "networks", ["network_id"], ["id"])


def _networks_from_names() -> None:
    conn = op.get_bind()
    cidr = ipaddress.IPv4Network(os.environ.get("RESIZEFLOW_FIXED_RANGE", "10.0.0.0/24"))
    gateway = str(next(iter(cidr.hosts()), cidr.network_address))
    names = [r[0] for r in conn.execute(sa.text("SELECT DISTINCT network FROM ports")).all()]
    for vni, name in enumerate(sorted(names), start=_FIRST_VNI):
        # The id the API derives from the name (network.default_network_id): the
        # next boot on the default network finds this one rather than making another.
        net = str(uuid.uuid5(uuid.NAMESPACE_URL, f"resizeflow:network:{name}"))
        sub = str(uuid.uuid4())
        conn.execute(
            sa.text(
                "INSERT INTO networks (id, project_id, name, description, status, "
                "admin_state_up, shared, mtu, segmentation_id, created_at, updated_at) VALUES "
                "(:id, '', :name, '', 'ACTIVE', :t, :t, 1450, :vni, CURRENT_TIMESTAMP, "
                "CURRENT_TIMESTAMP)"
            ),
            {"id": net, "name": name, "vni": vni, "t": True},
        )
        conn.execute(
            sa.text(
                "INSERT INTO subnets (id, network_id, project_id, name, description, "
                "ip_version, cidr, gateway_ip, enable_dhcp, created_at, updated_at) VALUES "
                "(:id, :net, '', :name, '', 4, :cidr, :gw, :t, CURRENT_TIMESTAMP, "
                "CURRENT_TIMESTAMP)"
            ),
            {
                "id": sub,
                "net": net,
                "name": f"{name}-subnet",
                "cidr": str(cidr),
                "gw": gateway,
                "t": True,
            },
        )
        conn.execute(
            sa.text(
                "UPDATE ports SET network_id = :net, subnet_id = :sub, device_owner = "
                "'compute:nova', device_id = instance_uuid, status = 'ACTIVE', "
                "binding_host_id = (SELECT host FROM instances WHERE "
                "instances.uuid = ports.instance_uuid) WHERE network = :name"
            ),
            {"net": net, "sub": sub, "name": name},
        )
    conn.execute(
        sa.text("UPDATE ports SET created_at = CURRENT_TIMESTAMP, updated_at = CURRENT_TIMESTAMP")
    )


def downgrade() -> None:
    with op.batch_alter_table("ports", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("network", sa.String(length=255), nullable=False, server_default="private")
        )
    op.get_bind().execute(
        sa.text(
            "UPDATE ports SET network = (SELECT name FROM networks "
            "WHERE networks.id = ports.network_id)"
        )
    )
    with op.batch_alter_table("ports", schema=None) as batch_op:
        batch_op.drop_constraint("fk_ports_network_id", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_ports_network_id"))
        batch_op.drop_constraint("uq_ports_network_ip", type_="unique")
        batch_op.create_unique_constraint("uq_ports_network_ip", ["network", "ip_address"])
        for column in (
            "updated_at",
            "created_at",
            "preserve_on_delete",
            "binding_host_id",
            "status",
            "admin_state_up",
            "device_owner",
            "device_id",
            "description",
            "name",
            "project_id",
            "subnet_id",
            "network_id",
        ):
            batch_op.drop_column(column)
    op.drop_table("tunnel_endpoints")
    with op.batch_alter_table("subnets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_subnets_network_id"))
    op.drop_table("subnets")
    with op.batch_alter_table("networks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_networks_project_id"))
    op.drop_table("networks")
