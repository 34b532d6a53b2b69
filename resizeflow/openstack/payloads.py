"""The payloads of Nova's versioned notifications, built from plain facts about a server.

Each payload is an ovo-style dict (``nova_object.name/namespace/version/data``)
with every field of the Nova notification object and version named here, so a
consumer written against Nova's notification samples reads them unchanged.
The steps gather the facts (``InstanceFacts``) inside their transaction; these
functions only shape them.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import traceback as tb
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Nova's versions of the objects built here.
INSTANCE_ACTION = ("InstanceActionPayload", "1.9")
INSTANCE_RESIZE_PREP = ("InstanceActionResizePrepPayload", "1.4")
INSTANCE_ACTION_VOLUME = ("InstanceActionVolumePayload", "1.7")
INSTANCE_CREATE = ("InstanceCreatePayload", "1.13")
INSTANCE_EXISTS = ("InstanceExistsPayload", "2.1")
FLAVOR = ("FlavorPayload", "1.4")
IP = ("IpPayload", "1.0")
BLOCK_DEVICE = ("BlockDevicePayload", "1.0")
EXCEPTION = ("ExceptionPayload", "1.1")
AUDIT_PERIOD = ("AuditPeriodPayload", "1.0")


@dataclass(frozen=True)
class PortFacts:
    id: str
    network: str  # the network's name, Nova's label
    mac_address: str
    ip_address: str | None = None


@dataclass(frozen=True)
class VolumeFacts:
    volume_id: str
    device: str


@dataclass(frozen=True)
class InstanceFacts:
    """What a notification says about a server, read from its rows by the step."""

    uuid: str
    user_id: str
    project_id: str
    name: str
    description: str | None
    host: str | None
    node: str | None
    vm_state: str
    task_state: str | None
    power_state: str
    flavor: Mapping[str, Any]
    metadata: Mapping[str, str]
    image_ref: str | None
    locked: bool
    locked_reason: str | None
    created_at: dt.datetime
    updated_at: dt.datetime | None
    launched_at: dt.datetime | None
    deleted_at: dt.datetime | None
    request_id: str | None
    initiator_user: str | None
    initiator_project: str | None
    ports: Sequence[PortFacts] = field(default_factory=tuple)
    volumes: Sequence[VolumeFacts] = field(default_factory=tuple)


def _obj(kind: tuple[str, str], data: dict[str, Any]) -> dict[str, Any]:
    name, version = kind
    return {
        "nova_object.name": name,
        "nova_object.namespace": "nova",
        "nova_object.version": version,
        "nova_object.data": data,
    }


def _time(when: dt.datetime | None) -> str | None:
    """Nova's notification timestamps: ISO 8601, UTC, seconds, with a Z."""
    return None if when is None else when.replace(microsecond=0).isoformat() + "Z"


def link_local(mac: str) -> str:
    """The IPv6 link-local address a NIC with this MAC gives itself (EUI-64)."""
    octets = [int(x, 16) for x in mac.split(":")]
    octets[0] ^= 0x02
    eui = [*octets[:3], 0xFF, 0xFE, *octets[3:]]
    return str(ipaddress.IPv6Address(bytes([0xFE, 0x80, 0, 0, 0, 0, 0, 0, *eui])))


def flavor(f: Mapping[str, Any]) -> dict[str, Any]:
    return _obj(
        FLAVOR,
        {
            "flavorid": str(f.get("flavorid", f.get("id"))),
            "name": f.get("name"),
            "memory_mb": int(f.get("memory_mb", 0)),
            "vcpus": int(f.get("vcpus", 0)),
            "root_gb": int(f.get("root_gb", 0)),
            "ephemeral_gb": int(f.get("ephemeral_gb", 0)),
            "swap": int(f.get("swap", 0)),
            "disabled": bool(f.get("disabled", False)),
            "is_public": bool(f.get("is_public", True)),
            "rxtx_factor": 1.0,
            "vcpu_weight": 0,
            "extra_specs": {},
            "projects": None,
            "description": None,
        },
    )


def exception(exc: BaseException, details: str | None = None) -> dict[str, Any]:
    """Nova's ExceptionPayload: where it was raised, what, and the traceback."""
    frames = tb.extract_tb(exc.__traceback__) if exc.__traceback__ else []
    last = frames[-1] if frames else None
    module = exc.__class__.__module__
    if last is not None:
        module = _module_of(last.filename, module)
    return _obj(
        EXCEPTION,
        {
            "function_name": last.name if last is not None else "",
            "module_name": module,
            "exception": type(exc).__name__,
            "exception_message": getattr(exc, "message", None) or str(exc),
            "traceback": details or "".join(tb.format_exception(type(exc), exc, exc.__traceback__)),
        },
    )


def _module_of(filename: str, default: str) -> str:
    parts = filename.replace("\\", "/").rsplit("/", 4)
    if "resizeflow" in parts:
        tail = parts[parts.index("resizeflow") :]
        return ".".join(tail).removesuffix(".py")
    return default


def _instance_data(i: InstanceFacts) -> dict[str, Any]:
    return {
        "uuid": i.uuid,
        "user_id": i.user_id,
        "tenant_id": i.project_id,
        "reservation_id": "",
        "display_name": i.name,
        "display_description": i.description,
        "host_name": i.name,
        "host": i.host,
        "node": i.node,
        "os_type": None,
        "architecture": None,
        "availability_zone": "nova",
        "image_uuid": i.image_ref or "",
        "key_name": None,
        "kernel_id": "",
        "ramdisk_id": "",
        "created_at": _time(i.created_at),
        "launched_at": _time(i.launched_at),
        "terminated_at": _time(i.deleted_at),
        "deleted_at": _time(i.deleted_at),
        "updated_at": _time(i.updated_at),
        "state": i.vm_state,
        "power_state": i.power_state,
        "task_state": i.task_state,
        "progress": 0,
        "ip_addresses": [
            _obj(
                IP,
                {
                    "mac": p.mac_address,
                    # The fixed IP, or for a port without one the NIC's own
                    # IPv6 link-local address.
                    "address": p.ip_address or link_local(p.mac_address),
                    "port_uuid": p.id,
                    "meta": {},
                    "version": 4 if p.ip_address else 6,
                    "label": p.network,
                    "device_name": f"tap{p.id[:11]}",
                },
            )
            for p in i.ports
        ],
        "block_devices": [
            _obj(
                BLOCK_DEVICE,
                {
                    "boot_index": None,
                    "delete_on_termination": False,
                    "device_name": v.device,
                    "tag": None,
                    "volume_id": v.volume_id,
                },
            )
            for v in i.volumes
        ],
        "flavor": flavor(i.flavor),
        "metadata": dict(i.metadata),
        "locked": i.locked,
        "locked_reason": i.locked_reason,
        "auto_disk_config": "MANUAL",
        "request_id": i.request_id,
        "action_initiator_user": i.initiator_user,
        "action_initiator_project": i.initiator_project,
        "shares": [],
    }


def instance_action(
    i: InstanceFacts,
    fault: BaseException | None = None,
    details: str | None = None,
    *,
    new_flavor: Mapping[str, Any] | None = None,
    volume_id: str | None = None,
) -> dict[str, Any]:
    """InstanceActionPayload; with ``new_flavor``, InstanceActionResizePrepPayload;
    with ``volume_id``, InstanceActionVolumePayload (a volume attached or detached)."""
    data = {**_instance_data(i), "fault": None if fault is None else exception(fault, details)}
    if new_flavor is not None:
        return _obj(INSTANCE_RESIZE_PREP, {**data, "new_flavor": flavor(new_flavor)})
    if volume_id is not None:
        return _obj(INSTANCE_ACTION_VOLUME, {**data, "volume_id": volume_id})
    return _obj(INSTANCE_ACTION, data)


def instance_create(
    i: InstanceFacts, fault: BaseException | None = None, details: str | None = None
) -> dict[str, Any]:
    data = {
        **_instance_data(i),
        "fault": None if fault is None else exception(fault, details),
        "keypairs": [],
        "tags": [],
        "trusted_image_certificates": None,
        "instance_name": f"instance-{i.uuid}",
    }
    return _obj(INSTANCE_CREATE, data)


def instance_exists(
    i: InstanceFacts, beginning: dt.datetime, ending: dt.datetime
) -> dict[str, Any]:
    """InstanceExistsPayload: the server as it was over an audit period."""
    period = _obj(
        AUDIT_PERIOD,
        {"audit_period_beginning": _time(beginning), "audit_period_ending": _time(ending)},
    )
    return _obj(INSTANCE_EXISTS, {**_instance_data(i), "audit_period": period})


def audit_period(now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """Nova's default audit period (a month): from the first of this month to now."""
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0), now
