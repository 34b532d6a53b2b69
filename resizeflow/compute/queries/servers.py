"""Servers as their caller may see them: one, or a list in Nova's order."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from resizeflow.compute.policy import RequestContext, authorize
from resizeflow.compute.queries.base import Reader
from resizeflow.compute.queries.infos import FaultInfo, MarkerNotFound, PortInfo, ServerInfo
from resizeflow.db.instances import SystemMetadata, visible_instance
from resizeflow.db.models import Instance, InstanceFault, Network, Port, VolumeAttachment
from resizeflow.states import api_status


class ServerQueries(Reader):
    def server(self, caller: RequestContext, uuid: str) -> ServerInfo:
        with self.db.snapshot() as s:
            inst = visible_instance(s, caller, uuid)
            authorize(caller, "compute:servers:show", inst.project_id)
            return server_info(s, inst)

    def servers(
        self,
        caller: RequestContext,
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
        authorize(caller, "compute:servers:index")
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
            authorize(caller, "compute:servers:index:get_all_tenants")
            if project_id is not None:
                stmt = stmt.where(Instance.project_id == project_id)
        else:
            stmt = stmt.where(Instance.project_id == caller.project_id)
        if host is not None:
            stmt = stmt.where(Instance.host == host)
        with self.db.snapshot() as s:
            rows = nova_list_order(s.scalars(stmt))
            found = [server_info(s, inst) for inst in rows]
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


def server_info(session: Session, inst: Instance) -> ServerInfo:
    ports = session.execute(
        select(Network.name, Port.id, Port.mac_address, Port.ip_address)
        .join(Network, Network.id == Port.network_id)
        .where(Port.instance_uuid == inst.uuid)
        .order_by(Network.name, Port.id)
    ).all()
    volumes = session.execute(
        select(VolumeAttachment.volume_id, VolumeAttachment.delete_on_termination)
        .where(VolumeAttachment.instance_uuid == inst.uuid)
        .order_by(VolumeAttachment.id)
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
        ports=tuple(PortInfo(pid, name, mac, ip) for name, pid, mac, ip in ports),
        volumes=tuple((volume_id, bool(dot)) for volume_id, dot in volumes),
        # Nova shows a fault only while the server is in ERROR.
        fault=(
            FaultInfo(fault.code, fault.message, fault.details, fault.created_at)
            if fault is not None and inst.vm_state.value == "error"
            else None
        ),
    )


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
