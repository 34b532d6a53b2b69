"""Read-side queries: servers, flavors, migrations, actions, hypervisors, services.

Each query runs in a read-only snapshot, applies the same visibility rules as
the service layer (another project's server does not exist) and returns plain
frozen dataclasses, so the API and the CLI never hold ORM rows.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import uuid as uuidlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from resizeflow import errors, flows
from resizeflow.compute.policy import RequestContext, allowed, authorize
from resizeflow.conf import Settings
from resizeflow.db import api as dbapi
from resizeflow.db import journal, services
from resizeflow.db.instances import SystemMetadata, visible_instance
from resizeflow.db.models import (
    ComputeNode,
    Flavor,
    Instance,
    InstanceAction,
    InstanceActionEvent,
    InstanceFault,
    Migration,
    Port,
    Service,
    StepJournal,
    utcnow,
)
from resizeflow.db.session import Database
from resizeflow.states import JournalStatus, MigrationStatus, api_status


class MarkerNotFound(errors.Invalid):
    """A page's marker names nothing in the list (Nova answers 400)."""

    msg_fmt = "Marker %(marker)s could not be found."


@dataclass(frozen=True)
class FaultInfo:
    code: int
    message: str
    details: str | None
    created_at: dt.datetime


@dataclass(frozen=True)
class PortInfo:
    id: str
    network: str
    mac_address: str
    ip_address: str | None = None


@dataclass(frozen=True)
class ServerInfo:
    uuid: str
    name: str
    project_id: str
    user_id: str
    status: str
    vm_state: str
    task_state: str | None
    power_state: int
    host: str | None
    node: str | None
    flavor: dict[str, Any]
    metadata: dict[str, str]
    image_ref: str | None
    locked: bool
    locked_by: str | None
    locked_reason: str | None
    description: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    launched_at: dt.datetime | None
    ports: tuple[PortInfo, ...]
    fault: FaultInfo | None


@dataclass(frozen=True)
class FlavorInfo:
    id: int
    flavorid: str
    name: str
    vcpus: int
    memory_mb: int
    root_gb: int
    ephemeral_gb: int
    swap: int
    is_public: bool
    disabled: bool
    description: str | None = None


@dataclass(frozen=True)
class MigrationInfo:
    id: int
    uuid: str
    instance_uuid: str
    migration_type: str
    status: str
    source_compute: str
    source_node: str
    # None when scheduling found no host (the migration is in error).
    dest_compute: str | None
    dest_node: str | None
    old_instance_type_id: int
    new_instance_type_id: int
    created_at: dt.datetime
    updated_at: dt.datetime
    user_id: str | None = None
    project_id: str | None = None
    dest_host: str | None = None  # the address the dest host advertises (Nova's my_ip)


@dataclass(frozen=True)
class EventInfo:
    event: str
    host: str | None
    start_time: dt.datetime
    finish_time: dt.datetime | None
    result: str | None
    traceback: str | None


@dataclass(frozen=True)
class ActionInfo:
    action: str
    instance_uuid: str
    request_id: str
    user_id: str
    project_id: str
    start_time: dt.datetime
    finish_time: dt.datetime | None
    message: str | None
    events: tuple[EventInfo, ...] | None  # None when the caller may not see events
    updated_at: dt.datetime | None = None  # the last change: a step starting or ending


@dataclass(frozen=True)
class ServiceInfo:
    id: int
    uuid: str
    binary: str
    host: str
    zone: str
    disabled: bool
    disabled_reason: str | None
    up: bool
    forced_down: bool
    updated_at: dt.datetime | None


@dataclass(frozen=True)
class HypervisorInfo:
    id: int
    uuid: str
    host: str
    node: str
    vcpus: int
    memory_mb: int
    local_gb: int
    vcpus_used: int
    memory_mb_used: int
    local_gb_used: int
    running_vms: int
    service: ServiceInfo | None
    servers: tuple[tuple[str, str], ...] = ()  # (uuid, name) of the servers on the node
    host_ip: str | None = None  # the address the host advertises (Nova's my_ip)


@dataclass(frozen=True)
class StepInfo:
    flow: str
    step: str
    position: int
    host: str
    status: str
    attempts: int
    deliveries: int
    worker: str | None
    enqueued_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    last_error: str | None

    @property
    def duration(self) -> float | None:
        if self.started_at is None:
            return None
        return ((self.finished_at or utcnow()) - self.started_at).total_seconds()


@dataclass(frozen=True)
class MigrationFilters:
    """Nova's os-migrations filters; ``host`` is the source or the dest, and wins over source."""

    instance_uuid: str | None = None
    status: str | None = None
    source_compute: str | None = None
    migration_type: str | None = None
    marker: str | None = None  # 2.59: the uuid of the last migration of the previous page
    user_id: str | None = None  # 2.80
    project_id: str | None = None  # 2.80
    host: str | None = None
    hidden: bool | None = None  # resizeflow's migrations (resizes) are never hidden


@dataclass(frozen=True)
class Page:
    """How many rows, and changed since or before when (Nova's 2.58/2.59/2.66)."""

    limit: int | None = None
    changes_since: dt.datetime | None = None
    changes_before: dt.datetime | None = None


@dataclass(frozen=True)
class ActionFilters:
    """2.58: paging by request id, and changes since/before (2.66) a time."""

    limit: int | None = None
    marker: str | None = None
    changes_since: dt.datetime | None = None
    changes_before: dt.datetime | None = None


# Stable ids for the rows Nova gives a uuid to (services and compute nodes, 2.53),
# derived from what identifies them so every API process shows the same one.
_UUID_NS = uuidlib.UUID("5b2f6a3e-8d0c-4c36-9a51-7e0b1d2c4f10")


def service_uuid(host: str, binary: str) -> str:
    return str(uuidlib.uuid5(_UUID_NS, f"service:{binary}:{host}"))


def node_uuid(host: str, node: str) -> str:
    return str(uuidlib.uuid5(_UUID_NS, f"compute-node:{host}:{node}"))


def _server(session: Session, inst: Instance) -> ServerInfo:
    ports = session.scalars(
        select(Port).where(Port.instance_uuid == inst.uuid).order_by(Port.network, Port.id)
    ).all()
    fault = session.scalars(
        select(InstanceFault)
        .where(InstanceFault.instance_uuid == inst.uuid)
        .order_by(InstanceFault.id.desc())
        .limit(1)
    ).first()
    sysmeta = SystemMetadata(inst)
    return ServerInfo(
        uuid=inst.uuid,
        name=inst.display_name,
        project_id=inst.project_id,
        user_id=inst.user_id,
        status=api_status(inst.vm_state, inst.task_state),
        vm_state=inst.vm_state.value,
        task_state=inst.task_state.value if inst.task_state else None,
        power_state=int(inst.power_state),
        host=inst.host,
        node=inst.node,
        flavor=dict(inst.flavor),
        metadata=sysmeta.user_metadata,
        image_ref=sysmeta.image_ref,
        locked=inst.locked,
        locked_by=inst.locked_by,
        locked_reason=sysmeta.locked_reason,
        description=inst.description,
        created_at=inst.created_at,
        updated_at=inst.updated_at,
        launched_at=inst.launched_at,
        ports=tuple(PortInfo(p.id, p.network, p.mac_address, p.ip_address) for p in ports),
        # Nova shows a fault only while the server is in ERROR.
        fault=(
            FaultInfo(fault.code, fault.message, fault.details, fault.created_at)
            if fault is not None and inst.vm_state.value == "error"
            else None
        ),
    )


def _flavor(f: Flavor) -> FlavorInfo:
    return FlavorInfo(
        id=f.id,
        flavorid=f.flavorid,
        name=f.name,
        vcpus=f.vcpus,
        memory_mb=f.memory_mb,
        root_gb=f.root_gb,
        ephemeral_gb=f.ephemeral_gb,
        swap=f.swap,
        is_public=f.is_public,
        disabled=f.disabled,
        description=f.description,
    )


def host_ip(session: Session, host: str) -> str | None:
    """Nova's ``my_ip`` of a compute host: the address it advertises, when that is an IP.

    A host that advertises a name (the default: its own name) has no IP known
    here; Nova's views allow null for ``host_ip`` and ``dest_host``.
    """
    address = services.migration_address(session, host)
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return None
    return address


def _migration(session: Session, m: Migration) -> MigrationInfo:
    return MigrationInfo(
        id=m.id,
        uuid=m.uuid,
        instance_uuid=m.instance_uuid,
        migration_type=m.migration_type,
        status=m.status.value,
        source_compute=m.source_compute,
        source_node=m.source_node,
        dest_compute=m.dest_compute,
        dest_node=m.dest_node,
        old_instance_type_id=m.old_instance_type_id,
        new_instance_type_id=m.new_instance_type_id,
        created_at=m.created_at,
        updated_at=m.updated_at,
        user_id=m.user_id,
        project_id=m.project_id,
        # NOTE: Nova records the dest's my_ip on the migration when the dest
        # claims it; resizeflow reads the address the dest host advertises now.
        dest_host=None if m.dest_compute is None else host_ip(session, m.dest_compute),
    )


def flavor_info(f: Flavor) -> FlavorInfo:
    return _flavor(f)


class Queries:
    """The read side of the compute service layer."""

    def __init__(self, settings: Settings, database: Database) -> None:
        self.settings = settings
        self.db = database

    # -- servers ------------------------------------------------------------
    def server(self, ctx: RequestContext, uuid: str) -> ServerInfo:
        with self.db.snapshot() as s:
            inst = visible_instance(s, ctx, uuid)
            authorize(ctx, "compute:servers:show", inst.project_id)
            return _server(s, inst)

    def servers(
        self,
        ctx: RequestContext,
        *,
        all_projects: bool = False,
        project_id: str | None = None,
        status: str | None = None,
        name: str | None = None,
        host: str | None = None,
        limit: int | None = None,
        marker: str | None = None,
        changes_since: dt.datetime | None = None,
        changes_before: dt.datetime | None = None,
        locked: bool | None = None,
    ) -> list[ServerInfo]:
        """Servers newest first; only an admin may list every project's.

        As in Nova, a list by change time includes the servers deleted in it.
        """
        authorize(ctx, "compute:servers:index")
        stmt = select(Instance)
        if changes_since is None and changes_before is None:
            stmt = stmt.where(Instance.deleted.is_(False))
        if changes_since is not None:
            stmt = stmt.where(Instance.updated_at >= changes_since)
        if changes_before is not None:
            stmt = stmt.where(Instance.updated_at <= changes_before)
        if locked is not None:
            stmt = stmt.where(Instance.locked.is_(locked))
        if all_projects:
            authorize(ctx, "compute:servers:index:get_all_tenants")
            if project_id is not None:
                stmt = stmt.where(Instance.project_id == project_id)
        else:
            stmt = stmt.where(Instance.project_id == ctx.project_id)
        if host is not None:
            stmt = stmt.where(Instance.host == host)
        with self.db.snapshot() as s:
            rows = nova_list_order(s.scalars(stmt))
            found = [_server(s, inst) for inst in rows]
        if status is not None:
            found = [f for f in found if f.status == status.upper()]
        if name:
            # Nova's name filter is a regular expression, searched in the name.
            pattern = re.compile(name)
            found = [f for f in found if pattern.search(f.name)]
        if marker is not None:
            ids = [f.uuid for f in found]
            if marker not in ids:
                raise MarkerNotFound(marker=marker)
            found = found[ids.index(marker) + 1 :]
        return found[:limit] if limit is not None else found

    # -- flavors ------------------------------------------------------------
    def flavors(self, *, include_private: bool = False) -> list[FlavorInfo]:
        stmt = select(Flavor).where(Flavor.disabled.is_(False))
        if not include_private:
            stmt = stmt.where(Flavor.is_public.is_(True))
        with self.db.snapshot() as s:
            rows = s.scalars(stmt).all()
            flavors = [_flavor(f) for f in rows]
        # Nova sorts by flavorid; numeric ids in numeric order.
        return sorted(flavors, key=lambda f: (not f.flavorid.isdigit(), _num(f.flavorid)))

    def flavor(self, flavorid: str) -> FlavorInfo:
        with self.db.snapshot() as s:
            f = s.scalars(select(Flavor).where(Flavor.flavorid == flavorid)).one_or_none()
            if f is None or f.disabled:
                raise errors.FlavorNotFound(flavor_id=flavorid)
            return _flavor(f)

    # -- migrations -----------------------------------------------------------
    def migrations(
        self,
        ctx: RequestContext,
        filters: MigrationFilters = MigrationFilters(),
        page: Page = Page(),
    ) -> list[MigrationInfo]:
        authorize(ctx, "compute:migrations:index")
        stmt = select(Migration)
        if filters.instance_uuid is not None:
            stmt = stmt.where(Migration.instance_uuid == filters.instance_uuid)
        if filters.status is not None:
            if filters.status not in {m.value for m in MigrationStatus}:
                return []  # no migration can be in a status that does not exist
            stmt = stmt.where(Migration.status == MigrationStatus(filters.status))
        if filters.hidden:
            return []
        if filters.host is not None:
            stmt = stmt.where(
                or_(
                    Migration.source_compute == filters.host, Migration.dest_compute == filters.host
                )
            )
        elif filters.source_compute is not None:
            stmt = stmt.where(Migration.source_compute == filters.source_compute)
        if filters.migration_type is not None:
            stmt = stmt.where(Migration.migration_type == filters.migration_type)
        if filters.user_id is not None:
            stmt = stmt.where(Migration.user_id == filters.user_id)
        if filters.project_id is not None:
            stmt = stmt.where(Migration.project_id == filters.project_id)
        if page.changes_since is not None:
            stmt = stmt.where(Migration.updated_at >= page.changes_since)
        if page.changes_before is not None:
            stmt = stmt.where(Migration.updated_at <= page.changes_before)
        with self.db.snapshot() as s:
            if filters.marker is not None:
                # Nova pages migrations newest first, by id, from the marker's uuid.
                mark = s.scalars(select(Migration).where(Migration.uuid == filters.marker)).first()
                if mark is None:
                    raise MarkerNotFound(marker=filters.marker)
                stmt = stmt.where(Migration.id < mark.id)
            stmt = stmt.order_by(Migration.id.desc())
            if page.limit is not None:
                stmt = stmt.limit(page.limit)
            return [_migration(s, m) for m in s.scalars(stmt)]

    def migration(self, ctx: RequestContext, migration_id: int) -> MigrationInfo:
        authorize(ctx, "compute:migrations:index")
        if not 0 < migration_id < 2**31:
            raise errors.MigrationNotFound(migration_id=migration_id)
        with self.db.snapshot() as s:
            return _migration(s, dbapi.get_migration(s, migration_id))

    def server_migration(self, instance_uuid: str, migration_id: str) -> MigrationInfo | None:
        """A migration of this server by id, or None (the caller has checked the policy)."""
        if not migration_id.isdigit() or not 0 < int(migration_id) < 2**31:
            return None
        with self.db.snapshot() as s:
            mig = s.get(Migration, int(migration_id))
            if mig is None or mig.instance_uuid != instance_uuid:
                return None
            return _migration(s, mig)

    def workflow(self, ctx: RequestContext, migration_id: int) -> list[StepInfo]:
        """The step journal of a migration, every flow it ran, in order."""
        authorize(ctx, "compute:workflows:show")
        if not 0 < migration_id < 2**31:
            raise errors.MigrationNotFound(migration_id=migration_id)
        with self.db.snapshot() as s:
            dbapi.get_migration(s, migration_id)
            rows = sorted(journal.rows(s, migration_id), key=lambda r: (r.enqueued_at, r.position))
            return [_step(r) for r in rows]

    def latest_migration(self, ctx: RequestContext, instance_uuid: str) -> MigrationInfo | None:
        """The newest migration of a server its caller may see."""
        with self.db.snapshot() as s:
            visible_instance(s, ctx, instance_uuid)
            mig = s.scalars(
                select(Migration)
                .where(Migration.instance_uuid == instance_uuid)
                .order_by(Migration.id.desc())
                .limit(1)
            ).first()
            return None if mig is None else _migration(s, mig)

    # -- instance actions ---------------------------------------------------
    def actions(
        self,
        ctx: RequestContext,
        uuid: str,
        filters: ActionFilters = ActionFilters(),
        *,
        deleted_visible: bool = True,
    ) -> list[ActionInfo]:
        """A server's actions newest first (2.58: paged from a request id, by change time)."""
        with self.db.snapshot() as s:
            # Nova keeps a deleted server's actions readable (read_deleted='yes').
            inst = visible_instance(s, ctx, uuid, deleted=True)
            if inst.deleted and not deleted_visible:
                raise errors.InstanceNotFound(instance_id=uuid)
            authorize(ctx, "compute:instance_actions:list", inst.project_id)
            rows = list(
                s.scalars(
                    select(InstanceAction)
                    .where(InstanceAction.instance_uuid == uuid)
                    .order_by(InstanceAction.start_time.desc(), InstanceAction.id.desc())
                )
            )
            found = [_action(a, None, _updated_at(s, a)) for a in rows]
        if filters.marker is not None:
            ids = [a.request_id for a in found]
            if filters.marker not in ids:
                raise MarkerNotFound(marker=filters.marker)
            found = found[ids.index(filters.marker) + 1 :]
        if filters.changes_since is not None:
            since = filters.changes_since
            found = [a for a in found if (a.updated_at or a.start_time) >= since]
        if filters.changes_before is not None:
            before = filters.changes_before
            found = [a for a in found if (a.updated_at or a.start_time) <= before]
        return found[: filters.limit] if filters.limit is not None else found

    def action(
        self,
        ctx: RequestContext,
        uuid: str,
        request_id: str,
        *,
        deleted_visible: bool = True,
        events_for_all: bool = False,
    ) -> ActionInfo:
        """One action; its events if policy allows (or, from 2.51, always)."""
        with self.db.snapshot() as s:
            # Nova keeps a deleted server's actions readable (read_deleted='yes').
            inst = visible_instance(s, ctx, uuid, deleted=True)
            if inst.deleted and not deleted_visible:
                raise errors.InstanceNotFound(instance_id=uuid)
            authorize(ctx, "compute:instance_actions:show", inst.project_id)
            row = s.scalars(
                select(InstanceAction)
                .where(
                    InstanceAction.instance_uuid == uuid, InstanceAction.request_id == request_id
                )
                .order_by(InstanceAction.id.desc())
                .limit(1)
            ).first()
            if row is None:
                raise errors.InstanceActionNotFound(request_id=request_id, instance_uuid=uuid)
            events: tuple[EventInfo, ...] | None = None
            if events_for_all or allowed(ctx, "compute:instance_actions:events", inst.project_id):
                events = _events(s, row.id)
            return _action(row, events, _updated_at(s, row))

    # -- hosts --------------------------------------------------------------
    def services(self, ctx: RequestContext) -> list[ServiceInfo]:
        authorize(ctx, "compute:services:index")
        with self.db.snapshot() as s:
            return [self._service(v) for v in s.scalars(select(Service).order_by(Service.id))]

    def _service(self, svc: Service) -> ServiceInfo:
        return ServiceInfo(
            id=svc.id,
            uuid=service_uuid(svc.host, svc.binary),
            binary=svc.binary,
            host=svc.host,
            zone="nova",
            disabled=svc.disabled,
            disabled_reason=svc.disabled_reason,
            up=services.is_up(svc, self.settings.service_down_time),
            forced_down=svc.forced_down,
            updated_at=svc.last_seen_at,
        )

    def hypervisors(
        self, ctx: RequestContext, rule: str = "compute:hypervisors:detail"
    ) -> list[HypervisorInfo]:
        """Every compute node; ``rule`` is the policy of the view asked for (list, detail, show)."""
        authorize(ctx, rule)
        with self.db.snapshot() as s:
            counts = s.execute(
                select(Instance.node, func.count())
                .where(Instance.deleted.is_(False))
                .group_by(Instance.node)
            ).all()
            running = {node: int(n) for node, n in counts}
            on_node: dict[str, list[tuple[str, str]]] = {}
            for inst_uuid, name, node in s.execute(
                select(Instance.uuid, Instance.display_name, Instance.node)
                .where(Instance.deleted.is_(False))
                .order_by(Instance.created_at, Instance.uuid)
            ):
                if node is not None:
                    on_node.setdefault(node, []).append((inst_uuid, name))
            out = []
            for n in s.scalars(select(ComputeNode).order_by(ComputeNode.id)):
                svc = services.get(s, n.host)
                out.append(
                    HypervisorInfo(
                        id=n.id,
                        uuid=node_uuid(n.host, n.node),
                        host=n.host,
                        node=n.node,
                        vcpus=n.vcpus,
                        memory_mb=n.memory_mb,
                        local_gb=n.local_gb,
                        vcpus_used=n.vcpus_used,
                        memory_mb_used=n.memory_mb_used,
                        local_gb_used=n.local_gb_used,
                        running_vms=int(running.get(n.node, 0)),
                        service=None if svc is None else self._service(svc),
                        servers=tuple(on_node.get(n.node, ())),
                        host_ip=host_ip(s, n.host),
                    )
                )
            return out


def nova_list_order(servers: Iterable[Instance]) -> list[Instance]:
    """Servers in the order of Nova's list: newest first, by ``created_at`` to the
    whole second, and those created in the same second by uuid, ascending.

    Nova's default sort is ``created_at`` descending, to which its multi-cell
    lister appends ``uuid`` ascending (``nova/compute/instance_list.py``). The
    ``created_at`` it compares has no fraction of a second: the conductor
    creates the instance from the build request it was sent over RPC, and
    oslo.versionedobjects writes a time in a message as ISO 8601 without the
    fraction, so what the cell database stores is the whole second.
    """
    by_uuid = sorted(servers, key=lambda inst: inst.uuid)
    # A stable sort: within one second, the uuid order stays.
    return sorted(by_uuid, key=lambda inst: inst.created_at.replace(microsecond=0), reverse=True)


def _num(flavorid: str) -> int | str:
    return int(flavorid) if flavorid.isdigit() else flavorid


def _updated_at(session: Session, a: InstanceAction) -> dt.datetime:
    """When the action last changed: its newest event start or end, or its own times."""
    newest = session.execute(
        select(
            func.max(InstanceActionEvent.start_time), func.max(InstanceActionEvent.finish_time)
        ).where(InstanceActionEvent.action_id == a.id)
    ).one()
    times = [t for t in (a.start_time, a.finish_time, *newest) if t is not None]
    return max(times)


def _action(
    a: InstanceAction, events: Sequence[EventInfo] | None, updated_at: dt.datetime | None = None
) -> ActionInfo:
    return ActionInfo(
        action=a.action,
        instance_uuid=a.instance_uuid,
        request_id=a.request_id,
        user_id=a.user_id,
        project_id=a.project_id,
        start_time=a.start_time,
        finish_time=a.finish_time,
        message=a.message,
        events=None if events is None else tuple(events),
        updated_at=updated_at,
    )


def _step(r: StepJournal) -> StepInfo:
    return StepInfo(
        flow=r.flow,
        step=r.step,
        position=r.position,
        host=r.host,
        status=r.status,
        attempts=r.attempts,
        deliveries=r.deliveries,
        worker=r.worker,
        enqueued_at=r.enqueued_at,
        started_at=r.started_at,
        finished_at=r.finished_at,
        last_error=r.last_error,
    )


def _events(session: Session, action_id: int) -> tuple[EventInfo, ...]:
    """An action's events, newest first as Nova lists them, with the steps running
    now shown as events in progress.

    A step writes its event when it ends (in the commit that finishes it);
    until then its journal row says it is running, and its event is the newest.
    """
    rows = session.scalars(
        select(InstanceActionEvent).where(InstanceActionEvent.action_id == action_id)
    )
    # Nova orders by the event's creation, then its id, both descending.
    found = [
        (
            e.start_time,
            e.id,
            EventInfo(e.event, e.host, e.start_time, e.finish_time, e.result, e.traceback),
        )
        for e in rows
    ]
    written = {info.event for _, _, info in found}
    for r in session.scalars(
        select(StepJournal).where(
            StepJournal.action_id == action_id, StepJournal.status == JournalStatus.RUNNING
        )
    ):
        name = flows.step(r.step).event
        if name not in written and r.started_at is not None:
            found.append(
                (r.started_at, 2**63, EventInfo(name, r.host, r.started_at, None, None, None))
            )
    return tuple(info for *_, info in sorted(found, key=lambda f: (f[0], f[1]), reverse=True))
