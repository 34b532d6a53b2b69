"""Compute hosts: their services and their hypervisors (compute nodes)."""

from __future__ import annotations

import ipaddress
import uuid as uuidlib

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from resizeflow.compute.policy import RequestContext, authorize
from resizeflow.compute.queries.base import Reader
from resizeflow.compute.queries.infos import HypervisorInfo, ServiceInfo
from resizeflow.db import services
from resizeflow.db.models import ComputeNode, Instance, Service


class HostQueries(Reader):
    def services(self, caller: RequestContext) -> list[ServiceInfo]:
        authorize(caller, "compute:services:index")
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
        self, caller: RequestContext, rule: str = "compute:hypervisors:detail"
    ) -> list[HypervisorInfo]:
        """Every compute node; ``rule`` is the policy of the view asked for (list, detail, show)."""
        authorize(caller, rule)
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


# Stable ids for the rows Nova gives a uuid to (services and compute nodes, 2.53),
# derived from what identifies them so every API process shows the same one.
_UUID_NS = uuidlib.UUID("5b2f6a3e-8d0c-4c36-9a51-7e0b1d2c4f10")


def service_uuid(host: str, binary: str) -> str:
    return str(uuidlib.uuid5(_UUID_NS, f"service:{binary}:{host}"))


def node_uuid(host: str, node: str) -> str:
    return str(uuidlib.uuid5(_UUID_NS, f"compute-node:{host}:{node}"))


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
