"""Block Storage v3 response bodies: volumes, attachments and the version document."""

from __future__ import annotations

import datetime as dt
from typing import Any

from resizeflow.api import volume_version
from resizeflow.api.microversion import Version, fmt
from resizeflow.openstack.cinder import AttachmentInfo, VolumeInfo

V3 = f"{volume_version.PREFIX}/v3"


def when(value: dt.datetime | None) -> str | None:
    return value.isoformat(timespec="microseconds") if value is not None else None


def version_entry(base: str) -> dict[str, Any]:
    return {
        "id": "v3.0",
        "status": "CURRENT",
        "version": fmt(volume_version.MAX_VERSION),
        "min_version": fmt(volume_version.MIN_VERSION),
        "updated": "2022-08-31T00:00:00Z",
        "links": [
            {"rel": "describedby", "type": "text/html", "href": "https://docs.openstack.org/"},
            {"rel": "self", "href": f"{base}{V3}/"},
        ],
        "media-types": [
            {"base": "application/json", "type": "application/vnd.openstack.volume+json;version=3"}
        ],
    }


def links(base: str, vol: VolumeInfo) -> list[dict[str, str]]:
    return [
        {"rel": "self", "href": f"{base}{V3}/{vol.project_id}/volumes/{vol.id}"},
        {
            "rel": "bookmark",
            "href": f"{base}{volume_version.PREFIX}/{vol.project_id}/volumes/{vol.id}",
        },
    ]


def volume_brief(base: str, vol: VolumeInfo) -> dict[str, Any]:
    return {"id": vol.id, "name": vol.name, "links": links(base, vol)}


def volume_attachment(att: AttachmentInfo) -> dict[str, Any]:
    """One entry of a volume's ``attachments`` (those the guest has, as Cinder lists them)."""
    return {
        "id": att.volume_id,
        "attachment_id": att.id,
        "volume_id": att.volume_id,
        "server_id": att.instance_uuid,
        "host_name": att.connected_host,
        "device": att.device,
        "attached_at": when(att.attached_at),
    }


def volume(base: str, vol: VolumeInfo, version: Version, is_admin: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": vol.id,
        "name": vol.name,
        "description": vol.description,
        "size": vol.size,
        "status": vol.status,
        "availability_zone": "nova",
        "bootable": "false",
        "encrypted": False,
        "multiattach": False,
        "created_at": when(vol.created_at),
        "updated_at": when(vol.updated_at),
        "user_id": vol.user_id,
        "metadata": {},
        "volume_type": "__DEFAULT__",
        "snapshot_id": None,
        "source_volid": None,
        "consistencygroup_id": None,
        "replication_status": None,
        "migration_status": None,
        "attachments": [
            volume_attachment(a) for a in vol.attachments if a.attach_status == "attached"
        ],
        "links": links(base, vol),
    }
    if volume_version.at_least(version, (3, 13)):
        body["group_id"] = None
    if volume_version.at_least(version, (3, 48)):
        body["shared_targets"] = False
        body["service_uuid"] = None
    if is_admin:
        # Cinder shows these to admins only (volume_extension:*_attribute).
        body["os-vol-tenant-attr:tenant_id"] = vol.project_id
        body["os-vol-host-attr:host"] = vol.storage_host
        body["os-vol-mig-status-attr:migstat"] = None
        body["os-vol-mig-status-attr:name_id"] = None
        if volume_version.at_least(version, (3, 21)):
            body["provider_id"] = None
    return body


def attachment_brief(att: AttachmentInfo) -> dict[str, Any]:
    return {
        "id": att.id,
        "status": att.attach_status,
        "instance": att.instance_uuid,
        "volume_id": att.volume_id,
    }


def attachment(att: AttachmentInfo) -> dict[str, Any]:
    return {
        **attachment_brief(att),
        "attached_at": when(att.attached_at),
        "detached_at": None,
        "attach_mode": att.attach_mode,
        "connection_info": att.connection_info,
    }
