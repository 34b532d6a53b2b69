"""Networking API v2.0 response bodies: networks, subnets, ports, the version document.

Attributes of the extensions listed by ``/v2.0/extensions`` are shown, and no
others; those Neutron's default policy shows an admin alone (the provider
segment, a port's binding host and VIF type) are left out for anyone else.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from resizeflow.openstack.neutron import NetworkInfo, PortDetail, SubnetInfo

V2 = "/v2.0"
RESOURCES = (("network", "networks"), ("subnet", "subnets"), ("port", "ports"))
# (alias, name, description): each one's attributes are in the bodies below.
EXTENSIONS = (
    ("binding", "Port Binding", "The host a port is bound to and how its VIF is plugged."),
    ("external-net", "Neutron external network", "The router:external attribute (always false)."),
    ("net-mtu", "Network MTU", "The mtu attribute of networks."),
    (
        "network_availability_zone",
        "Network Availability Zone",
        "The availability_zones and availability_zone_hints attributes (empty here).",
    ),
    ("project-id", "project_id field enabled", "project_id beside tenant_id."),
    ("provider", "Provider Network", "The VXLAN segment of a network (admin only)."),
    (
        "standard-attr-description",
        "standard-attr-description",
        "A description on networks, subnets and ports.",
    ),
    (
        "standard-attr-timestamp",
        "Resource timestamps",
        "created_at and updated_at on networks, subnets and ports.",
    ),
)
EXTENSIONS_UPDATED = "2024-01-01T00:00:00-00:00"


def when(value: dt.datetime) -> str:
    return value.replace(microsecond=0).isoformat() + "Z"


def version_list(base: str) -> dict[str, Any]:
    return {
        "versions": [
            {"id": "v2.0", "status": "CURRENT", "links": [{"rel": "self", "href": f"{base}{V2}/"}]}
        ]
    }


def resources(base: str) -> dict[str, Any]:
    return {
        "resources": [
            {
                "name": name,
                "collection": collection,
                "links": [{"rel": "self", "href": f"{base}{V2}/{collection}"}],
            }
            for name, collection in RESOURCES
        ]
    }


def extension(alias: str) -> dict[str, Any] | None:
    for known, name, description in EXTENSIONS:
        if known == alias:
            return {
                "alias": alias,
                "name": name,
                "description": description,
                "updated": EXTENSIONS_UPDATED,
                "links": [],
            }
    return None


def extensions() -> list[dict[str, Any]]:
    return [e for alias, _, _ in EXTENSIONS if (e := extension(alias)) is not None]


def pick(body: dict[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    """The attributes a ``fields`` query asks for, or all of them."""
    return {k: v for k, v in body.items() if k in fields} if fields else body


def _owned(project_id: str) -> dict[str, str]:
    return {"project_id": project_id, "tenant_id": project_id}


def network(net: NetworkInfo, admin: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": net.id,
        "name": net.name,
        "description": net.description,
        "status": net.status,
        "admin_state_up": net.admin_state_up,
        "shared": net.shared,
        "subnets": list(net.subnets),
        **_owned(net.project_id),
        "mtu": net.mtu,
        "router:external": False,
        "availability_zone_hints": [],
        "availability_zones": [],
        "tags": [],
        "created_at": when(net.created_at),
        "updated_at": when(net.updated_at),
        "revision_number": 1,
    }
    if admin:
        body["provider:network_type"] = "vxlan"
        body["provider:physical_network"] = None
        body["provider:segmentation_id"] = net.segmentation_id
    return body


def subnet(sub: SubnetInfo) -> dict[str, Any]:
    return {
        "id": sub.id,
        "name": sub.name,
        "description": sub.description,
        "network_id": sub.network_id,
        **_owned(sub.project_id),
        "ip_version": sub.ip_version,
        "cidr": sub.cidr,
        "gateway_ip": sub.gateway_ip,
        "enable_dhcp": sub.enable_dhcp,
        "allocation_pools": [{"start": a, "end": b} for a, b in sub.allocation_pools],
        "dns_nameservers": [],
        "host_routes": [],
        "subnetpool_id": None,
        "ipv6_ra_mode": None,
        "ipv6_address_mode": None,
        "tags": [],
        "created_at": when(sub.created_at),
        "updated_at": when(sub.updated_at),
        "revision_number": 0,
    }


def port(p: PortDetail, admin: bool) -> dict[str, Any]:
    fixed = (
        [{"subnet_id": p.subnet_id, "ip_address": p.ip_address}] if p.ip_address is not None else []
    )
    body: dict[str, Any] = {
        "id": p.id,
        "name": p.name,
        "description": p.description,
        "network_id": p.network_id,
        **_owned(p.project_id),
        "mac_address": p.mac_address,
        "fixed_ips": fixed,
        "device_id": p.device_id,
        "device_owner": p.device_owner,
        "status": p.status,
        "admin_state_up": p.admin_state_up,
        "binding:vnic_type": "normal",
        "security_groups": [],
        "tags": [],
        "created_at": when(p.created_at),
        "updated_at": when(p.updated_at),
        "revision_number": 0,
    }
    if admin:
        bound = bool(p.binding_host_id)
        body["binding:host_id"] = p.binding_host_id or ""
        body["binding:vif_type"] = "bridge" if bound else "unbound"
        body["binding:vif_details"] = {"port_filter": False} if bound else {}
        body["binding:profile"] = {}
    return body
