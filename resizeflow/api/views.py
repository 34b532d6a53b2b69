"""Nova's response shapes, built from the read-side dataclasses for one microversion."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from resizeflow.api.microversion import Version
from resizeflow.compute.queries import (
    ActionInfo,
    FlavorInfo,
    HypervisorInfo,
    MigrationInfo,
    ServerInfo,
    ServiceInfo,
    StepInfo,
)


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


def server(s: ServerInfo, version: Version, base: str, *, admin: bool) -> dict[str, Any]:
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
        "progress": 0,
        "key_name": None,
        "config_drive": "",
        "security_groups": [{"name": "default"}],
        "OS-DCF:diskConfig": "MANUAL",
        "OS-EXT-AZ:availability_zone": "nova",
        "OS-EXT-STS:vm_state": s.vm_state,
        "OS-EXT-STS:task_state": s.task_state,
        "OS-EXT-STS:power_state": s.power_state,
        "OS-SRV-USG:launched_at": iso_plain(s.launched_at),
        "OS-SRV-USG:terminated_at": None,
        "os-extended-volumes:volumes_attached": [],
    }
    if admin:
        body["OS-EXT-SRV-ATTR:host"] = s.host
        body["OS-EXT-SRV-ATTR:hypervisor_hostname"] = s.node
        body["OS-EXT-SRV-ATTR:instance_name"] = f"instance-{s.uuid}"
        if version.at_least(3):
            body.update(
                {
                    "OS-EXT-SRV-ATTR:hostname": s.name,
                    "OS-EXT-SRV-ATTR:reservation_id": "",
                    "OS-EXT-SRV-ATTR:launch_index": 0,
                    "OS-EXT-SRV-ATTR:kernel_id": "",
                    "OS-EXT-SRV-ATTR:ramdisk_id": "",
                    "OS-EXT-SRV-ATTR:root_device_name": "/dev/vda",
                    "OS-EXT-SRV-ATTR:user_data": None,
                }
            )
        if version.at_least(16):
            body["host_status"] = "UP" if s.host else ""
    if version.at_least(9):
        body["locked"] = s.locked
    if version.at_least(19):
        body["description"] = None
    if version.at_least(26):
        body["tags"] = []
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
    # Each port's fixed IP (IPAM in the database) and its MAC.
    out: dict[str, list[dict[str, Any]]] = {}
    for p in s.ports:
        out.setdefault(p.network, []).append(
            {
                "version": 4,
                "addr": p.ip_address or "",
                "OS-EXT-IPS:type": "fixed",
                "OS-EXT-IPS-MAC:mac_addr": p.mac_address,
            }
        )
    return out


def flavor_brief(f: FlavorInfo, base: str) -> dict[str, Any]:
    return {"id": f.flavorid, "name": f.name, "links": links(base, "flavors", f.flavorid)}


def flavor(f: FlavorInfo, base: str) -> dict[str, Any]:
    return {
        **flavor_brief(f, base),
        "ram": f.memory_mb,
        "vcpus": f.vcpus,
        "disk": f.root_gb,
        "OS-FLV-EXT-DATA:ephemeral": f.ephemeral_gb,
        # Nova shows a swap of 0 as "" before 2.75.
        "swap": f.swap or "",
        "rxtx_factor": 1.0,
        "os-flavor-access:is_public": f.is_public,
        "OS-FLV-DISABLED:disabled": f.disabled,
    }


def migration(m: MigrationInfo, version: Version) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": m.id,
        "status": m.status,
        "instance_uuid": m.instance_uuid,
        "source_compute": m.source_compute,
        "source_node": m.source_node,
        "dest_compute": m.dest_compute,
        "dest_node": m.dest_node,
        "dest_host": "",
        "source_region": "RegionOne",
        "dest_region": "RegionOne",
        "old_instance_type_id": m.old_instance_type_id,
        "new_instance_type_id": m.new_instance_type_id,
        "created_at": iso_plain(m.created_at),
        "updated_at": iso_plain(m.updated_at),
    }
    if version.at_least(23):
        body["migration_type"] = m.migration_type
    return body


def action(a: ActionInfo, *, admin: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "action": a.action,
        "instance_uuid": a.instance_uuid,
        "request_id": a.request_id,
        "user_id": a.user_id,
        "project_id": a.project_id,
        "start_time": iso_plain(a.start_time),
        "message": a.message,
    }
    if a.events is not None:
        body["events"] = [
            {
                "event": e.event,
                "start_time": iso_plain(e.start_time),
                "finish_time": iso_plain(e.finish_time),
                "result": e.result,
                **({"traceback": e.traceback} if admin else {}),
            }
            for e in a.events
        ]
    return body


def service(s: ServiceInfo, version: Version) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": s.id,
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


def hypervisor(h: HypervisorInfo) -> dict[str, Any]:
    svc = h.service
    return {
        "id": h.id,
        "hypervisor_hostname": h.node,
        "state": "up" if svc is not None and svc.up else "down",
        "status": "disabled" if svc is not None and svc.disabled else "enabled",
        "hypervisor_type": "QEMU",
        "hypervisor_version": 1,
        "host_ip": "",
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
        "cpu_info": "{}",
        "service": {
            "host": h.host,
            "id": svc.id if svc is not None else None,
            "disabled_reason": svc.disabled_reason if svc is not None else None,
        },
    }


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
