"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25 03:41:07.747958
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "compute_nodes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("host", sa.String(length=64), nullable=False),
        sa.Column("node", sa.String(length=255), nullable=False),
        sa.Column("vcpus", sa.Integer(), nullable=False),
        sa.Column("memory_mb", sa.Integer(), nullable=False),
        sa.Column("local_gb", sa.Integer(), nullable=False),
        sa.Column("vcpus_used", sa.Integer(), nullable=False),
        sa.Column("memory_mb_used", sa.Integer(), nullable=False),
        sa.Column("local_gb_used", sa.Integer(), nullable=False),
        sa.Column("cpu_allocation_ratio", sa.Float(), nullable=False),
        sa.Column("ram_allocation_ratio", sa.Float(), nullable=False),
        sa.Column("disk_allocation_ratio", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("host", "node", name="uq_compute_nodes_host_node"),
    )
    op.create_table(
        "flavors",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("flavorid", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("vcpus", sa.Integer(), nullable=False),
        sa.Column("memory_mb", sa.Integer(), nullable=False),
        sa.Column("root_gb", sa.Integer(), nullable=False),
        sa.Column("ephemeral_gb", sa.Integer(), nullable=False),
        sa.Column("swap", sa.Integer(), nullable=False),
        sa.Column("is_public", sa.Boolean(), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("flavorid"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "instances",
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("display_name", sa.String(length=255), nullable=False),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("host", sa.String(length=64), nullable=True),
        sa.Column("node", sa.String(length=255), nullable=True),
        sa.Column("flavor", sa.JSON(), nullable=False),
        sa.Column("old_flavor", sa.JSON(), nullable=True),
        sa.Column("new_flavor", sa.JSON(), nullable=True),
        sa.Column("system_metadata", sa.JSON(), nullable=False),
        sa.Column(
            "vm_state",
            sa.Enum(
                "active",
                "building",
                "stopped",
                "resized",
                "error",
                "deleted",
                name="vm_state",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column(
            "task_state",
            sa.Enum(
                "scheduling",
                "spawning",
                "resize_prep",
                "resize_migrating",
                "resize_migrated",
                "resize_finish",
                "resize_reverting",
                "powering-off",
                "powering-on",
                "deleting",
                name="task_state",
                native_enum=False,
                length=32,
            ),
            nullable=True,
        ),
        sa.Column("power_state", sa.Integer(), nullable=False),
        sa.Column("locked", sa.Boolean(), nullable=False),
        sa.Column("locked_by", sa.String(length=16), nullable=True),
        sa.Column("launched_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("deleted_at", sa.DateTime(), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("uuid"),
    )
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.create_index("ix_instances_host", ["host"], unique=False)
        batch_op.create_index("ix_instances_project", ["project_id"], unique=False)

    op.create_table(
        "quotas",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("resource", sa.String(length=32), nullable=False),
        sa.Column("hard_limit", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("project_id", "resource", name="uq_quotas"),
    )
    op.create_table(
        "allocations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("consumer_uuid", sa.String(length=36), nullable=False),
        sa.Column("node_id", sa.Integer(), nullable=False),
        sa.Column("resource_class", sa.String(length=32), nullable=False),
        sa.Column("used", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["node_id"],
            ["compute_nodes.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("consumer_uuid", "node_id", "resource_class", name="uq_allocations"),
    )
    with op.batch_alter_table("allocations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_allocations_consumer_uuid"), ["consumer_uuid"], unique=False
        )

    op.create_table(
        "instance_actions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=255), nullable=False),
        sa.Column("instance_uuid", sa.String(length=36), nullable=False),
        sa.Column("request_id", sa.String(length=255), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("project_id", sa.String(length=255), nullable=False),
        sa.Column("start_time", sa.DateTime(), nullable=False),
        sa.Column("finish_time", sa.DateTime(), nullable=True),
        sa.Column("message", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(
            ["instance_uuid"],
            ["instances.uuid"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("instance_actions", schema=None) as batch_op:
        batch_op.create_index("ix_instance_actions_request", ["request_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_instance_actions_instance_uuid"), ["instance_uuid"], unique=False
        )

    op.create_table(
        "instance_faults",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instance_uuid", sa.String(length=36), nullable=False),
        sa.Column("code", sa.Integer(), nullable=False),
        sa.Column("message", sa.String(length=255), nullable=False),
        sa.Column("details", sa.Text(), nullable=True),
        sa.Column("host", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["instance_uuid"],
            ["instances.uuid"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("instance_faults", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_instance_faults_instance_uuid"), ["instance_uuid"], unique=False
        )

    op.create_table(
        "migrations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("instance_uuid", sa.String(length=36), nullable=False),
        sa.Column("migration_type", sa.String(length=16), nullable=False),
        sa.Column("source_compute", sa.String(length=64), nullable=False),
        sa.Column("source_node", sa.String(length=255), nullable=False),
        sa.Column("dest_compute", sa.String(length=64), nullable=False),
        sa.Column("dest_node", sa.String(length=255), nullable=False),
        sa.Column("old_instance_type_id", sa.Integer(), nullable=False),
        sa.Column("new_instance_type_id", sa.Integer(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "pre-migrating",
                "migrating",
                "post-migrating",
                "finished",
                "confirming",
                "confirmed",
                "reverting",
                "reverted",
                "error",
                name="migration_status",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["instance_uuid"],
            ["instances.uuid"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("uuid"),
    )
    with op.batch_alter_table("migrations", schema=None) as batch_op:
        batch_op.create_index(
            "ix_migrations_instance_status", ["instance_uuid", "status"], unique=False
        )

    op.create_table(
        "ports",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("instance_uuid", sa.String(length=36), nullable=False),
        sa.Column("network", sa.String(length=255), nullable=False),
        sa.Column("mac_address", sa.String(length=17), nullable=False),
        sa.ForeignKeyConstraint(
            ["instance_uuid"],
            ["instances.uuid"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("ports", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ports_instance_uuid"), ["instance_uuid"], unique=False)

    op.create_table(
        "volume_attachments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("volume_id", sa.String(length=36), nullable=False),
        sa.Column("instance_uuid", sa.String(length=36), nullable=False),
        sa.Column("device", sa.String(length=32), nullable=False),
        sa.Column("connected_host", sa.String(length=64), nullable=True),
        sa.Column("connection_info", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["instance_uuid"],
            ["instances.uuid"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("volume_id", "instance_uuid", name="uq_volume_attachments"),
    )
    with op.batch_alter_table("volume_attachments", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_volume_attachments_instance_uuid"), ["instance_uuid"], unique=False
        )

    op.create_table(
        "instance_actions_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("action_id", sa.Integer(), nullable=False),
        sa.Column("event", sa.String(length=255), nullable=False),
        sa.Column("host", sa.String(length=64), nullable=True),
        sa.Column("start_time", sa.DateTime(), nullable=False),
        sa.Column("finish_time", sa.DateTime(), nullable=True),
        sa.Column("result", sa.String(length=255), nullable=True),
        sa.Column("traceback", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["action_id"],
            ["instance_actions.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("action_id", "event", name="uq_action_events"),
    )
    op.create_table(
        "port_bindings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("port_id", sa.String(length=36), nullable=False),
        sa.Column("host", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["port_id"],
            ["ports.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("port_id", "host", name="uq_port_bindings"),
    )
    op.create_table(
        "step_journal",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("migration_id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(length=255), nullable=False),
        sa.Column("flow", sa.String(length=32), nullable=False),
        sa.Column("step", sa.String(length=255), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("host", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("deliveries", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(length=255), nullable=True),
        sa.Column("enqueued_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["migration_id"],
            ["migrations.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("migration_id", "step", name="uq_step_journal"),
    )
    with op.batch_alter_table("step_journal", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_step_journal_migration_id"), ["migration_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("step_journal", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_step_journal_migration_id"))

    op.drop_table("step_journal")
    op.drop_table("port_bindings")
    op.drop_table("instance_actions_events")
    with op.batch_alter_table("volume_attachments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_volume_attachments_instance_uuid"))

    op.drop_table("volume_attachments")
    with op.batch_alter_table("ports", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ports_instance_uuid"))

    op.drop_table("ports")
    with op.batch_alter_table("migrations", schema=None) as batch_op:
        batch_op.drop_index("ix_migrations_instance_status")

    op.drop_table("migrations")
    with op.batch_alter_table("instance_faults", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_instance_faults_instance_uuid"))

    op.drop_table("instance_faults")
    with op.batch_alter_table("instance_actions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_instance_actions_instance_uuid"))
        batch_op.drop_index("ix_instance_actions_request")

    op.drop_table("instance_actions")
    with op.batch_alter_table("allocations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_allocations_consumer_uuid"))

    op.drop_table("allocations")
    op.drop_table("quotas")
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_index("ix_instances_project")
        batch_op.drop_index("ix_instances_host")

    op.drop_table("instances")
    op.drop_table("flavors")
    op.drop_table("compute_nodes")
