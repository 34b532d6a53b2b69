"""SQLAlchemy 2 typed models. They run on SQLite and PostgreSQL alike.

Flavors are embedded in instances as JSON copies, as Nova does, so deleting a
flavor never changes a running server or a pending revert.
"""

from __future__ import annotations

import datetime as dt
import uuid as uuidlib
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from resizeflow.states import (
    JOURNAL_OPEN,
    JournalStatus,
    MigrationStatus,
    PowerState,
    TaskState,
    VmState,
)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _enum(cls: type, name: str) -> Enum:
    # Stored as the enum's value (Nova's strings), checked by the tables in
    # resizeflow.states rather than by a database enum type.
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=False,
        length=32,
        values_callable=lambda e: [m.value for m in e],
    )


class PowerStateType(TypeDecorator[PowerState]):
    """Nova stores power_state as an integer; read it back as the enum."""

    impl = Integer
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> int | None:
        return None if value is None else int(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> PowerState | None:
        return None if value is None else PowerState(value)


# The predicate of the partial index on open journal rows. A query can use the
# index only if its own condition implies this one, so it reads the same set.
JOURNAL_OPEN_SQL = text(
    "status IN (" + ", ".join(f"'{s.value}'" for s in JournalStatus if s in JOURNAL_OPEN) + ")"
)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON}


class ComputeNode(Base):
    __tablename__ = "compute_nodes"
    __table_args__ = (UniqueConstraint("host", "node", name="uq_compute_nodes_host_node"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    host: Mapped[str] = mapped_column(String(64))
    node: Mapped[str] = mapped_column(String(255))
    vcpus: Mapped[int]
    memory_mb: Mapped[int]
    local_gb: Mapped[int]
    vcpus_used: Mapped[int] = mapped_column(default=0)
    memory_mb_used: Mapped[int] = mapped_column(default=0)
    local_gb_used: Mapped[int] = mapped_column(default=0)
    cpu_allocation_ratio: Mapped[float] = mapped_column(Float, default=16.0)
    ram_allocation_ratio: Mapped[float] = mapped_column(Float, default=1.5)
    disk_allocation_ratio: Mapped[float] = mapped_column(Float, default=1.0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class Service(Base):
    """A running resizeflow process (a compute host's worker), seen through its heartbeats."""

    __tablename__ = "services"
    __table_args__ = (UniqueConstraint("host", "binary", name="uq_services_host_binary"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    host: Mapped[str] = mapped_column(String(64))
    binary: Mapped[str] = mapped_column(String(64), default="nova-compute")
    topic: Mapped[str] = mapped_column(String(255))
    report_count: Mapped[int] = mapped_column(default=0)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled_reason: Mapped[str | None] = mapped_column(String(255))
    forced_down: Mapped[bool] = mapped_column(Boolean, default=False)
    # None once the worker has shut down cleanly: the host is down at once.
    last_seen_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    # Where other hosts reach this one over SSH to copy disks (Nova's my_ip).
    migration_address: Mapped[str | None] = mapped_column(String(255))


class WorkerProcess(Base):
    """One running worker process of a compute host, with its own heartbeat.

    A host's service is up while any of its processes beats; each process has
    a slot, unique per host, that makes its Celery node name
    ``<host>-<slot>@<machine>``. A restarted process takes the lowest free
    slot, so a host's single worker keeps its node name across restarts.
    """

    __tablename__ = "worker_processes"
    __table_args__ = (
        UniqueConstraint("host", "slot", name="uq_worker_processes_host_slot"),
        UniqueConstraint("node", name="uq_worker_processes_node"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    host: Mapped[str] = mapped_column(String(64), index=True)
    slot: Mapped[int] = mapped_column(Integer)
    node: Mapped[str] = mapped_column(String(255))
    machine: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class BrokerEpoch(Base):
    """One lifetime of the broker's data, as seen by the broker-loss detector.

    The current epoch is the row with the highest ``seq``; its token is also
    kept in the broker (see :mod:`resizeflow.brokerloss`). A broker that comes
    back without the token has lost its queues, and the detector that inserts
    the next ``seq`` (unique: one winner per loss) re-drives the workflows.
    """

    __tablename__ = "broker_epochs"
    __table_args__ = (UniqueConstraint("seq", name="uq_broker_epochs_seq"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    token: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    # False for the first epoch a deployment records, True for one that began
    # because the broker had lost the previous epoch's data.
    after_loss: Mapped[bool] = mapped_column(Boolean, default=False)
    # Workflows re-driven because of that loss.
    redriven: Mapped[int] = mapped_column(Integer, default=0)
    # When the epoch's marker was first seen in the broker. Until then the
    # marker's absence is no loss: it may never have been written at all.
    marked_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


class Flavor(Base):
    __tablename__ = "flavors"

    id: Mapped[int] = mapped_column(primary_key=True)
    flavorid: Mapped[str] = mapped_column(String(255), unique=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    vcpus: Mapped[int]
    memory_mb: Mapped[int]
    root_gb: Mapped[int]
    ephemeral_gb: Mapped[int] = mapped_column(default=0)
    swap: Mapped[int] = mapped_column(default=0)
    is_public: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    description: Mapped[str | None] = mapped_column(Text)  # shown from 2.55

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "flavorid": self.flavorid,
            "name": self.name,
            "vcpus": self.vcpus,
            "memory_mb": self.memory_mb,
            "root_gb": self.root_gb,
            "ephemeral_gb": self.ephemeral_gb,
            "swap": self.swap,
        }


class Instance(Base):
    __tablename__ = "instances"
    __table_args__ = (
        Index("ix_instances_host", "host"),
        Index("ix_instances_project", "project_id"),
    )

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(255), default="")
    project_id: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[str] = mapped_column(String(255))
    host: Mapped[str | None] = mapped_column(String(64))
    node: Mapped[str | None] = mapped_column(String(255))
    flavor: Mapped[dict[str, Any]]
    old_flavor: Mapped[dict[str, Any] | None]
    new_flavor: Mapped[dict[str, Any] | None]
    system_metadata: Mapped[dict[str, Any]] = mapped_column(default=dict)
    vm_state: Mapped[VmState] = mapped_column(_enum(VmState, "vm_state"))
    task_state: Mapped[TaskState | None] = mapped_column(_enum(TaskState, "task_state"))
    power_state: Mapped[PowerState] = mapped_column(PowerStateType, default=PowerState.NOSTATE)
    locked: Mapped[bool] = mapped_column(Boolean, default=False)
    locked_by: Mapped[str | None] = mapped_column(String(16))
    launched_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    description: Mapped[str | None] = mapped_column(String(255))


class Migration(Base):
    __tablename__ = "migrations"
    __table_args__ = (
        Index("ix_migrations_instance_status", "instance_uuid", "status"),
        # Beat's passes find migrations by status: auto-confirm those finished
        # before the window, the cleanup those in error.
        Index("ix_migrations_status_updated", "status", "updated_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    instance_uuid: Mapped[str] = mapped_column(ForeignKey("instances.uuid"))
    migration_type: Mapped[str] = mapped_column(String(16), default="resize")
    source_compute: Mapped[str] = mapped_column(String(64))
    source_node: Mapped[str] = mapped_column(String(255))
    dest_compute: Mapped[str | None] = mapped_column(String(64))
    dest_node: Mapped[str | None] = mapped_column(String(255))
    old_instance_type_id: Mapped[int]
    new_instance_type_id: Mapped[int]
    status: Mapped[MigrationStatus] = mapped_column(_enum(MigrationStatus, "migration_status"))
    # Who asked for it (shown from 2.80).
    user_id: Mapped[str | None] = mapped_column(String(255))
    project_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class Allocation(Base):
    """One resource class held by one consumer on one node.

    While a resize is underway the migration's uuid is the consumer of the
    source-node allocation and the instance's uuid that of the destination's,
    as in Nova's migration-based allocations.
    """

    __tablename__ = "allocations"
    __table_args__ = (
        UniqueConstraint("consumer_uuid", "node_id", "resource_class", name="uq_allocations"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    consumer_uuid: Mapped[str] = mapped_column(String(36), index=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("compute_nodes.id"))
    resource_class: Mapped[str] = mapped_column(String(32))
    used: Mapped[int]


class Network(Base):
    """A Neutron network: one L2 segment across hosts, a VXLAN of its own VNI."""

    __tablename__ = "networks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(255), index=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    description: Mapped[str] = mapped_column(String(255), default="")
    status: Mapped[str] = mapped_column(String(16), default="ACTIVE")
    admin_state_up: Mapped[bool] = mapped_column(Boolean, default=True)
    shared: Mapped[bool] = mapped_column(Boolean, default=False)
    mtu: Mapped[int] = mapped_column(Integer, default=1450)
    # The VXLAN network identifier: every host's bridge of this network joins it.
    segmentation_id: Mapped[int] = mapped_column(Integer, unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class Subnet(Base):
    """An IPv4 subnet of a network: its ports' fixed IPs come from it."""

    __tablename__ = "subnets"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    network_id: Mapped[str] = mapped_column(ForeignKey("networks.id"), index=True)
    project_id: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(255), default="")
    description: Mapped[str] = mapped_column(String(255), default="")
    ip_version: Mapped[int] = mapped_column(Integer, default=4)
    cidr: Mapped[str] = mapped_column(String(43))
    gateway_ip: Mapped[str | None] = mapped_column(String(39))
    enable_dhcp: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class Port(Base):
    """A Neutron port: a MAC and a fixed IP on a network, bound to the host its device runs on."""

    __tablename__ = "ports"
    # IPAM: a fixed IP belongs to at most one port of a network.
    __table_args__ = (UniqueConstraint("network_id", "ip_address", name="uq_ports_network_ip"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    # The server whose NIC this is, if any (Neutron's device_id for a compute port).
    instance_uuid: Mapped[str | None] = mapped_column(ForeignKey("instances.uuid"), index=True)
    network_id: Mapped[str] = mapped_column(ForeignKey("networks.id"), index=True)
    subnet_id: Mapped[str | None] = mapped_column(String(36))
    project_id: Mapped[str] = mapped_column(String(255), default="")
    name: Mapped[str] = mapped_column(String(255), default="")
    description: Mapped[str] = mapped_column(String(255), default="")
    mac_address: Mapped[str] = mapped_column(String(17))
    ip_address: Mapped[str | None] = mapped_column(String(39))
    device_id: Mapped[str] = mapped_column(String(255), default="")
    device_owner: Mapped[str] = mapped_column(String(255), default="")
    admin_state_up: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[str] = mapped_column(String(16), default="DOWN")
    # The host of the port's active binding (Neutron's binding:host_id): where
    # its device runs. The port_bindings rows are the hosts it is set up on,
    # which during a resize are both the source and the dest.
    binding_host_id: Mapped[str | None] = mapped_column(String(255))
    # A port the user made and handed to a boot survives the server's delete,
    # unbound (Nova's preserve_on_delete); a port made for the boot goes with it.
    preserve_on_delete: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class PortBinding(Base):
    __tablename__ = "port_bindings"
    __table_args__ = (UniqueConstraint("port_id", "host", name="uq_port_bindings"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    port_id: Mapped[str] = mapped_column(ForeignKey("ports.id"))
    host: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="ACTIVE")


class TunnelEndpoint(Base):
    """Where a host terminates its VXLAN tunnels (Neutron's ml2_vxlan_endpoints).

    Every host that plugs a network's bridge (the compute hosts, the DHCP
    host) records itself here, and floods its networks' broadcasts to all the
    others, so one network is one L2 segment whichever host a port is on.
    """

    __tablename__ = "tunnel_endpoints"

    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    ip_address: Mapped[str] = mapped_column(String(64))
    udp_port: Mapped[int] = mapped_column(Integer, default=4789)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class Volume(Base):
    """A block-storage volume (Cinder's ``volumes`` row); its data is on ``storage_host``."""

    __tablename__ = "volumes"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(255), index=True)
    user_id: Mapped[str] = mapped_column(String(255))
    name: Mapped[str | None] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(Integer)  # GiB
    # Cinder's status (creating, available, reserved, attaching, in-use,
    # detaching, deleting, error, error_deleting) and attach_status
    # (detached, attaching, attached, detaching).
    status: Mapped[str] = mapped_column(String(16), default="creating")
    attach_status: Mapped[str] = mapped_column(String(16), default="detached")
    storage_host: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime | None] = mapped_column(DateTime, onupdate=utcnow)


class VolumeAttachment(Base):
    """A volume attached to an instance: Cinder's attachment, with the host it is connected to.

    Reserved for an instance first (no host), then connected to the host the
    instance runs on (``connected_host`` and its ``connection_info``); a
    resize moves the connection from host to host, the attachment stays.
    """

    __tablename__ = "volume_attachments"
    __table_args__ = (UniqueConstraint("volume_id", "instance_uuid", name="uq_volume_attachments"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # Cinder's attachment id, as its attachments API and Nova's BDMs name it.
    attachment_id: Mapped[str] = mapped_column(
        String(36), unique=True, default=lambda: str(uuidlib.uuid4())
    )
    volume_id: Mapped[str] = mapped_column(String(36), index=True)
    instance_uuid: Mapped[str] = mapped_column(ForeignKey("instances.uuid"), index=True)
    # The guest's device (Nova's mountpoint); unknown while only reserved.
    device: Mapped[str | None] = mapped_column(String(32))
    # reserved, attaching, attached, detaching (Cinder's attachment status).
    attach_status: Mapped[str] = mapped_column(String(16), default="reserved")
    attach_mode: Mapped[str] = mapped_column(String(4), default="rw")
    # The host whose connector is connected to the volume, if any.
    connected_host: Mapped[str | None] = mapped_column(String(64))
    connection_info: Mapped[dict[str, Any] | None]
    connector: Mapped[dict[str, Any] | None]
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    attached_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    # Nova's block device mapping of the volume (set where Nova's side made
    # the attachment): its uuid, tag, whether deleting the server deletes the
    # volume, and its boot index (None: not a boot device).
    bdm_uuid: Mapped[str | None] = mapped_column(String(36))
    tag: Mapped[str | None] = mapped_column(String(60))
    delete_on_termination: Mapped[bool] = mapped_column(Boolean, default=False)
    boot_index: Mapped[int | None] = mapped_column(Integer)


class InstanceAction(Base):
    __tablename__ = "instance_actions"
    __table_args__ = (Index("ix_instance_actions_request", "request_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    action: Mapped[str] = mapped_column(String(255))
    instance_uuid: Mapped[str] = mapped_column(ForeignKey("instances.uuid"), index=True)
    request_id: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[str] = mapped_column(String(255))
    project_id: Mapped[str] = mapped_column(String(255))
    start_time: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    finish_time: Mapped[dt.datetime | None] = mapped_column(DateTime)
    message: Mapped[str | None] = mapped_column(String(255))


class InstanceActionEvent(Base):
    __tablename__ = "instance_actions_events"
    __table_args__ = (UniqueConstraint("action_id", "event", name="uq_action_events"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    action_id: Mapped[int] = mapped_column(ForeignKey("instance_actions.id"))
    event: Mapped[str] = mapped_column(String(255))
    host: Mapped[str | None] = mapped_column(String(64))
    start_time: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    finish_time: Mapped[dt.datetime | None] = mapped_column(DateTime)
    result: Mapped[str | None] = mapped_column(String(255))
    traceback: Mapped[str | None] = mapped_column(Text)


class InstanceFault(Base):
    __tablename__ = "instance_faults"

    id: Mapped[int] = mapped_column(primary_key=True)
    instance_uuid: Mapped[str] = mapped_column(ForeignKey("instances.uuid"), index=True)
    code: Mapped[int]
    message: Mapped[str] = mapped_column(String(255))
    details: Mapped[str | None] = mapped_column(Text)
    host: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class QuotaLimit(Base):
    """Per-project overrides; projects without a row use the settings defaults."""

    __tablename__ = "quotas"
    __table_args__ = (UniqueConstraint("project_id", "resource", name="uq_quotas"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[str] = mapped_column(String(255))
    resource: Mapped[str] = mapped_column(String(32))
    hard_limit: Mapped[int]


class StepJournal(Base):
    """One row per planned step: the database's record of workflow progress.

    A migration's flows key their rows by (migration, step); an instance
    operation's single row has no migration. Rows are never deleted: an abort
    that hands a resize back marks its flow's rows ``superseded``, and only one
    row per (migration, step) is ever live.
    """

    __tablename__ = "step_journal"
    __table_args__ = (
        Index(
            "uq_step_journal_live",
            "migration_id",
            "step",
            unique=True,
            sqlite_where=text("status != 'superseded'"),
            postgresql_where=text("status != 'superseded'"),
        ),
        Index("ix_step_journal_instance", "instance_uuid", "step"),
        # The rows of steps that may still run, a few among all ever written:
        # the reconciler reads only these (queries must say ``JOURNAL_OPEN``).
        Index(
            "ix_step_journal_open",
            "migration_id",
            sqlite_where=JOURNAL_OPEN_SQL,
            postgresql_where=JOURNAL_OPEN_SQL,
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    migration_id: Mapped[int | None] = mapped_column(ForeignKey("migrations.id"), index=True)
    instance_uuid: Mapped[str] = mapped_column(String(36))
    request_id: Mapped[str] = mapped_column(String(255))
    # The instance action whose events record this step; a step writes its
    # event by this id rather than looking the action up by request id.
    action_id: Mapped[int | None] = mapped_column(
        ForeignKey("instance_actions.id", name="fk_step_journal_action_id")
    )
    flow: Mapped[str] = mapped_column(String(32))
    step: Mapped[str] = mapped_column(String(255))
    position: Mapped[int]
    host: Mapped[str] = mapped_column(String(64))
    status: Mapped[JournalStatus] = mapped_column(
        _enum(JournalStatus, "journal_status"), default=JournalStatus.PENDING
    )
    # attempts counts runs of the step; deliveries counts every message that
    # arrived for it, duplicates included, so redelivery is visible.
    attempts: Mapped[int] = mapped_column(default=0)
    deliveries: Mapped[int] = mapped_column(default=0)
    # How many times the step's work was committed: 1 once it is done, ever.
    # More would mean a side effect applied twice; the chaos suite checks it.
    applied: Mapped[int] = mapped_column(default=0, server_default="0")
    worker: Mapped[str | None] = mapped_column(String(255))
    # The token of the delivery that holds the running step: the one copy
    # allowed to commit it (see journal.claim).
    holder: Mapped[str | None] = mapped_column(String(32))
    enqueued_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    # While running, the worker renews this with its heartbeat; once it lapses
    # the step's worker is presumed dead and the reconciler may re-drive it.
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    # Written when the step errors the workflow out: the migration status,
    # vm_state and task_state to put back if an operator retries it.
    restore: Mapped[dict[str, Any] | None]
