"""Nova's response shapes, built from the read-side dataclasses for one microversion."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from resizeflow.api.microversion import Version
from resizeflow.compute.queries.infos import (
    ActionInfo,
    EventInfo,
    FlavorInfo,
    HypervisorInfo,
    MigrationInfo,
    ServerInfo,
    ServiceInfo,
    StepInfo,
)
from resizeflow.openstack import payloads


def iso(when: dt.datetime | None) -> str | None:
    """Nova's server timestamps: ISO 8601, UTC, with a Z."""
    return None if when is None else when.replace(microsecond=0).isoformat() + "Z"


def iso_plain(when: dt.datetime | None) -> str | None:
    """Nova's action, migration and service timestamps: no zone, microseconds kept."""
    return None if when is None else when.isoformat()


def links(base: str, kind: str, ident: str) -> list[dict[str, str]]:
    root = base.rstrip("/")
    return [
        {"rel": "self", "href": f"{root}/v2.1/{kind}/{ident}"},
        {"rel": "bookmark", "href": f"{root}/{kind}/{ident}"},
    ]


def host_id(project_id: str, host: str | None) -> str:
    """Nova's hostId: a hash of project and host, so tenants can tell co-located servers."""
    if not host:
        return ""
    return hashlib.sha224((project_id + host).encode()).hexdigest()


def instance_name(uuid: str) -> str:
    """Nova's ``OS-EXT-SRV-ATTR:instance_name``: the libvirt domain's name."""
    return f"instance-{uuid}"


def reservation_id(uuid: str) -> str:
    """Nova's ``reservation_id`` of the boot request that made the server.

    Nova draws one per boot request (``r-`` and eight characters) and keeps it;
    resizeflow boots one server per request and keeps none, so it is derived
    from the server's uuid: stable, and of Nova's form.
    """
    digest = base64.b32encode(hashlib.sha256(uuid.encode()).digest()).decode().lower()
    return "r-" + digest[:8]


def server_brief(s: ServerInfo, base: str) -> dict[str, Any]:
    return {"id": s.uuid, "name": s.name, "links": links(base, "servers", s.uuid)}


def _flavor(s: ServerInfo, version: Version, base: str) -> dict[str, Any]:
    f = s.flavor
    if version.at_least(47):
        return {
            "vcpus": f["vcpus"],
            "ram": f["memory_mb"],
            "disk": f["root_gb"],
            "ephemeral": f.get("ephemeral_gb", 0),
            "swap": f.get("swap", 0),
            "original_name": f["name"],
            "extra_specs": {},
        }
    ref = str(f.get("flavorid", f["id"]))
    return {"id": ref, "links": links(base, "flavors", ref)[1:]}


# Nova shows a server's progress only in these statuses.
PROGRESS_STATUSES = frozenset(
    {"ACTIVE", "BUILD", "REBUILD", "RESIZE", "VERIFY_RESIZE", "MIGRATING"}
)


def server(
    s: ServerInfo, version: Version, base: str, *, admin: bool, show: bool = False
) -> dict[str, Any]:
    """A server as Nova shows it at ``version``; ``admin`` adds the extended attributes.

    ``show`` is one server's own page, which alone carries its server groups (2.71).
    """
    body: dict[str, Any] = {
        **server_brief(s, base),
        "status": s.status,
        "tenant_id": s.project_id,
        "user_id": s.user_id,
        "metadata": s.metadata,
        "hostId": host_id(s.project_id, s.host),
        "image": (
            {"id": s.image_ref, "links": links(base, "images", s.image_ref)[1:]}
            if s.image_ref
            else ""
        ),
        "flavor": _flavor(s, version, base),
        "created": iso(s.created_at),
        "updated": iso(s.updated_at),
        "addresses": _addresses(s),
        "accessIPv4": "",
        "accessIPv6": "",
        "key_name": None,
        "config_drive": "",
        "OS-DCF:diskConfig": "MANUAL",
        "OS-EXT-AZ:availability_zone": "nova",
        "OS-EXT-STS:vm_state": s.vm_state,
        "OS-EXT-STS:task_state": s.task_state,
        "OS-EXT-STS:power_state": s.power_state,
        "OS-SRV-USG:launched_at": iso_plain(s.launched_at),
        "OS-SRV-USG:terminated_at": None,
        "os-extended-volumes:volumes_attached": [
            # delete_on_termination from 2.3, as Nova's extended volumes show it.
            {"id": vid, **({"delete_on_termination": dot} if version.at_least(3) else {})}
            for vid, dot in s.volumes
        ],
    }
    if s.ports:
        # Nova lists the security groups of the server's ports, and has no key
        # for a server without ports. Every resizeflow port is in "default".
        body["security_groups"] = [{"name": "default"}]
    if s.status in PROGRESS_STATUSES:
        body["progress"] = 0
    if admin:
        body["OS-EXT-SRV-ATTR:host"] = s.host
        body["OS-EXT-SRV-ATTR:hypervisor_hostname"] = s.node
        body["OS-EXT-SRV-ATTR:instance_name"] = instance_name(s.uuid)
        if version.at_least(3):
            body.update(
                {
                    "OS-EXT-SRV-ATTR:hostname": s.name,
                    "OS-EXT-SRV-ATTR:reservation_id": reservation_id(s.uuid),
                    "OS-EXT-SRV-ATTR:launch_index": 0,
                    "OS-EXT-SRV-ATTR:kernel_id": "",
                    "OS-EXT-SRV-ATTR:ramdisk_id": "",
                    "OS-EXT-SRV-ATTR:root_device_name": "/dev/vda",
                    "OS-EXT-SRV-ATTR:user_data": None,
                }
            )
        if version.at_least(16):
            body["host_status"] = "UP" if s.host else ""
    if version.at_least(90):
        # 2.90: every caller sees the hostname.
        body["OS-EXT-SRV-ATTR:hostname"] = s.name
    if version.at_least(9):
        body["locked"] = s.locked
    if version.at_least(19):
        body["description"] = s.description
    if version.at_least(26):
        body["tags"] = []
    if version.at_least(63):
        body["trusted_image_certificates"] = None
    if show and version.at_least(71):
        body["server_groups"] = []
    if version.at_least(73):
        body["locked_reason"] = s.locked_reason
    if version.at_least(96):
        body["pinned_availability_zone"] = None
    if s.fault is not None:
        fault: dict[str, Any] = {
            "code": s.fault.code,
            "created": iso(s.fault.created_at),
            "message": s.fault.message,
        }
        # Nova shows details to admins, and to everyone unless it is a 500.
        if s.fault.details and (admin or s.fault.code != 500):
            fault["details"] = s.fault.details
        body["fault"] = fault
    return body


def _addresses(s: ServerInfo) -> dict[str, list[dict[str, Any]]]:
    # Each port's fixed IP from the IPAM, else (a port that has none) the NIC's
    # own IPv6 link-local address, derived from its MAC: Nova's "addr" must be an IP.
    out: dict[str, list[dict[str, Any]]] = {}
    for p in s.ports:
        out.setdefault(p.network, []).append(
            {
                "version": 4 if p.ip_address else 6,
                "addr": p.ip_address or payloads.link_local(p.mac_address),
                "OS-EXT-IPS:type": "fixed",
                "OS-EXT-IPS-MAC:mac_addr": p.mac_address,
            }
        )
    return out


def next_links(
    base: str, kind: str, query: Mapping[str, Any], marker: str | None
) -> list[dict[str, str]]:
    """Nova's ``<collection>_links``: the next page, from the last item shown."""
    if marker is None:
        return []
    # As Nova builds it: the query's parameters in sorted order, the marker
    # replaced where it was or added at the end.
    params = dict(sorted(query.items()))
    params["marker"] = marker
    return [{"rel": "next", "href": f"{base.rstrip('/')}/v2.1/{kind}?{urlencode(params)}"}]


def flavor_brief(f: FlavorInfo, base: str, version: Version) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": f.flavorid,
        "name": f.name,
        "links": links(base, "flavors", f.flavorid),
    }
    if version.at_least(55):
        body["description"] = f.description
    return body


def flavor(f: FlavorInfo, base: str, version: Version) -> dict[str, Any]:
    body: dict[str, Any] = {
        **flavor_brief(f, base, version),
        "ram": f.memory_mb,
        "vcpus": f.vcpus,
        "disk": f.root_gb,
        "OS-FLV-EXT-DATA:ephemeral": f.ephemeral_gb,
        # Nova shows a swap of 0 as "" before 2.75.
        "swap": f.swap if f.swap or version.at_least(75) else "",
        "rxtx_factor": 1.0,
        "os-flavor-access:is_public": f.is_public,
        "OS-FLV-DISABLED:disabled": f.disabled,
    }
    if version.at_least(61):
        body["extra_specs"] = {}
    return body


def migration(m: MigrationInfo, version: Version) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": m.id,
        "status": m.status,
        "instance_uuid": m.instance_uuid,
        "source_compute": m.source_compute,
        "source_node": m.source_node,
        "dest_compute": m.dest_compute,
        "dest_node": m.dest_node,
        # Nova's dest_host: the address the dest compute advertises (its my_ip).
        "dest_host": m.dest_host,
        "old_instance_type_id": m.old_instance_type_id,
        "new_instance_type_id": m.new_instance_type_id,
        "created_at": iso_plain(m.created_at),
        "updated_at": iso_plain(m.updated_at),
    }
    if version.at_least(23):
        body["migration_type"] = m.migration_type
    if version.at_least(59):
        body["uuid"] = m.uuid
    if version.at_least(80):
        # Null only for a migration older than the record of who asked (as in Nova).
        body["user_id"] = m.user_id
        body["project_id"] = m.project_id
    return body


def action(a: ActionInfo, version: Version, *, admin: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "action": a.action,
        "instance_uuid": a.instance_uuid,
        "request_id": a.request_id,
        "user_id": a.user_id,
        "project_id": a.project_id,
        "start_time": iso_plain(a.start_time),
        "message": a.message,
    }
    if version.at_least(58):
        body["updated_at"] = iso_plain(a.updated_at or a.start_time)
    if a.events is not None:
        body["events"] = [_event(e, a.project_id, version, admin=admin) for e in a.events]
    return body


def _event(e: EventInfo, project_id: str, version: Version, *, admin: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event": e.event,
        "start_time": iso_plain(e.start_time),
        "finish_time": iso_plain(e.finish_time),
        "result": e.result,
    }
    if admin:
        body["traceback"] = e.traceback
    if version.at_least(62):
        body["hostId"] = host_id(project_id, e.host)
        if admin:
            body["host"] = e.host or ""
    if version.at_least(84) and admin:
        # 2.84: the failure's details, for those the events:details policy allows (admins).
        body["details"] = _details(e)
    return body


def _details(e: EventInfo) -> str | None:
    """2.84: what went wrong in a failed event, without the traceback."""
    if e.result != "Error" or not e.traceback:
        return None
    lines = [line for line in e.traceback.strip().splitlines() if line.strip()]
    if not lines:
        return None
    # The traceback's last line is "package.module.Error: message": the message.
    kind, sep, message = lines[-1].partition(": ")
    return message if sep and " " not in kind else lines[-1]


def service(s: ServiceInfo, version: Version) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": s.uuid if version.at_least(53) else s.id,
        "binary": s.binary,
        "host": s.host,
        "zone": s.zone,
        "status": "disabled" if s.disabled else "enabled",
        "state": "up" if s.up else "down",
        "updated_at": iso_plain(s.updated_at),
        "disabled_reason": s.disabled_reason,
    }
    if version.at_least(11):
        body["forced_down"] = s.forced_down
    return body


# Fields 2.88 took out of a hypervisor (placement has the inventory and usage).
_USAGE_FIELDS = (
    "vcpus",
    "memory_mb",
    "local_gb",
    "vcpus_used",
    "memory_mb_used",
    "local_gb_used",
    "free_ram_mb",
    "free_disk_gb",
    "disk_available_least",
    "current_workload",
    "running_vms",
    "cpu_info",
)


def hypervisor_brief(
    h: HypervisorInfo, version: Version, *, with_servers: bool = False
) -> dict[str, Any]:
    svc = h.service
    body: dict[str, Any] = {
        "id": h.uuid if version.at_least(53) else h.id,
        "hypervisor_hostname": h.node,
        "state": "up" if svc is not None and svc.up else "down",
        "status": "disabled" if svc is not None and svc.disabled else "enabled",
    }
    if with_servers:
        body.update(_hypervisor_servers(h, version))
    return body


def _hypervisor_servers(h: HypervisorInfo, version: Version) -> dict[str, Any]:
    """``with_servers``: the node's servers by instance name, as Nova shows them.

    A node without servers has no ``servers`` key before 2.75, an empty list from it.
    """
    if not h.servers:
        return {"servers": []} if version.at_least(75) else {}
    return {"servers": [{"name": instance_name(uuid), "uuid": uuid} for uuid, _ in h.servers]}


def hypervisor(
    h: HypervisorInfo, version: Version, *, with_servers: bool = False, show: bool = False
) -> dict[str, Any]:
    svc = h.service
    body: dict[str, Any] = {
        **hypervisor_brief(h, version),
        "hypervisor_type": "QEMU",
        "hypervisor_version": 1,
        # Nova's host_ip is the compute host's my_ip: resizeflow's migration address.
        "host_ip": h.host_ip,
        "vcpus": h.vcpus,
        "memory_mb": h.memory_mb,
        "local_gb": h.local_gb,
        "vcpus_used": h.vcpus_used,
        "memory_mb_used": h.memory_mb_used,
        "local_gb_used": h.local_gb_used,
        "free_ram_mb": h.memory_mb - h.memory_mb_used,
        "free_disk_gb": h.local_gb - h.local_gb_used,
        "disk_available_least": h.local_gb - h.local_gb_used,
        "current_workload": 0,
        "running_vms": h.running_vms,
        # resizeflow does not collect the host CPU's model and features: Nova's
        # answer for a driver that reports none, an empty object from 2.28 (an
        # empty JSON string before).
        "cpu_info": {} if version.at_least(28) else "{}",
        "service": {
            "host": h.host,
            "id": (svc.uuid if version.at_least(53) else svc.id) if svc is not None else None,
            "disabled_reason": svc.disabled_reason if svc is not None else None,
        },
    }
    if version.at_least(88):
        for key in _USAGE_FIELDS:
            del body[key]
        # 2.88 shows the uptime in the detailed list and on one hypervisor. resizeflow
        # does not collect it: null, Nova's value when the driver cannot tell.
        body["uptime"] = None
    if with_servers:
        body.update(_hypervisor_servers(h, version))
    return body


def step(st: StepInfo) -> dict[str, Any]:
    return {
        "flow": st.flow,
        "step": st.step,
        "position": st.position,
        "host": st.host,
        "status": st.status,
        "attempts": st.attempts,
        "deliveries": st.deliveries,
        "worker": st.worker,
        "enqueued_at": iso_plain(st.enqueued_at),
        "started_at": iso_plain(st.started_at),
        "finished_at": iso_plain(st.finished_at),
        "duration": st.duration,
        "last_error": st.last_error,
    }
