"""What a Networking API request may carry, checked as Neutron's attribute map checks it.

Each create body is one resource under its singular key. An attribute
Neutron knows but resizeflow does not honour is refused rather than ignored,
and every failure names its attribute, in Neutron's words:
``Invalid input for <attr>. Reason: <why>.``
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from resizeflow.openstack.neutron import FixedIp
from resizeflow.openstack.neutron_errors import BadRequest, InvalidInput, PolicyNotAuthorized

_MAC = re.compile(r"^([0-9a-fA-F]{2})([:-][0-9a-fA-F]{2}){5}$")
TRUE = ("true", "1", "t", "yes", "y", "on")
FALSE = ("false", "0", "f", "no", "n", "off")
# Attributes every resource takes at create: who owns it.
OWNER = ("project_id", "tenant_id")


class AttributeInvalid(BadRequest):
    msg_fmt = "Invalid input for %(attr)s. Reason: %(reason)s."


def _shown(value: Any) -> str:
    return f"'{value}'" if isinstance(value, str) else repr(value)


def section(payload: Any, key: str) -> dict[str, Any]:
    """The resource of a create body, ``{"<key>": {...}}``."""
    if not isinstance(payload, dict) or key not in payload:
        raise BadRequest(reason=f"Resource body required: '{key}' expected in the request body")
    body = payload[key]
    if isinstance(body, list):
        raise BadRequest(reason="Bulk create is not supported here: one resource per request")
    if not isinstance(body, dict):
        raise BadRequest(reason=f"Resource body required: '{key}' must be an object")
    return body


def only(body: Mapping[str, Any], allowed: Iterable[str]) -> None:
    unknown = sorted(set(body) - set(allowed) - set(OWNER))
    if unknown:
        names = ", ".join(unknown)
        raise BadRequest(reason=f"Unrecognized attribute(s) '{names}'")


def required(body: Mapping[str, Any], attr: str) -> Any:
    if attr not in body:
        raise BadRequest(
            reason=f"Failed to parse request. Required attribute '{attr}' not specified"
        )
    return body[attr]


def required_text(body: Mapping[str, Any], attr: str) -> str:
    required(body, attr)
    return text(body, attr)


def text(body: Mapping[str, Any], attr: str, default: str = "") -> str:
    value = body.get(attr, default)
    if value is None and attr == "description":
        return ""
    if not isinstance(value, str):
        raise AttributeInvalid(attr=attr, reason=f"{_shown(value)} is not a valid string")
    if len(value) > 255:
        raise AttributeInvalid(attr=attr, reason=f"{_shown(value)} exceeds maximum length of 255")
    return value


def to_bool(attr: str, value: Any) -> bool:
    """A boolean as Neutron converts it: true/false, 0/1, or their strings."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in TRUE + FALSE:
        return value.strip().lower() in TRUE
    raise AttributeInvalid(attr=attr, reason=f"{_shown(value)} cannot be converted to boolean")


def flag(body: Mapping[str, Any], attr: str, default: bool) -> bool:
    return to_bool(attr, body[attr]) if attr in body else default


def owner(body: Mapping[str, Any], project_id: str, is_admin: bool, action: str) -> str:
    """The project a new resource is made for: the caller's, or another named by an admin."""
    named = {body[k] for k in OWNER if body.get(k) is not None}
    if len(named) > 1:
        raise BadRequest(reason="project_id and tenant_id do not match")
    if not named:
        return project_id
    wanted = named.pop()
    if not isinstance(wanted, str):
        raise AttributeInvalid(attr="project_id", reason=f"{_shown(wanted)} is not a valid string")
    if wanted != project_id and not is_admin:
        raise PolicyNotAuthorized(action=action)
    return wanted


def empty_or_absent(body: Mapping[str, Any], attrs: Sequence[str], what: str) -> None:
    """Attributes Neutron has that resizeflow does not: accepted only empty."""
    for attr in attrs:
        if body.get(attr) not in (None, [], {}, ""):
            raise InvalidInput(reason=f"{attr} is not supported here ({what})")


def ipv4_address(attr: str, value: Any) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except (ValueError, TypeError):
        raise AttributeInvalid(
            attr=attr, reason=f"{_shown(value)} is not a valid IP address"
        ) from None


def cidr(value: Any) -> ipaddress.IPv4Network:
    """An IPv4 subnet; host bits set are cleared, as Neutron normalises a CIDR."""
    if not isinstance(value, str) or "/" not in value:
        raise AttributeInvalid(attr="cidr", reason=f"{_shown(value)} is not a valid IP subnet")
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise AttributeInvalid(
            attr="cidr", reason=f"{_shown(value)} is not a valid IP subnet"
        ) from None
    if not isinstance(net, ipaddress.IPv4Network):
        raise InvalidInput(reason=f"Cidr {value} has not the same IP version 4")
    return net


def ip_version(value: Any) -> int:
    if value == 6 or value == "6":
        raise InvalidInput(reason="IPv6 subnets are not supported here; ip_version must be 4")
    if value not in (4, "4"):
        raise AttributeInvalid(attr="ip_version", reason=f"{_shown(value)} is not in [4, 6]")
    return 4


def gateway(body: Mapping[str, Any], net: ipaddress.IPv4Network) -> str | None:
    """The subnet's gateway: the first host address when not given, none when null."""
    if "gateway_ip" not in body:
        return str(next(iter(net.hosts()), net.network_address))
    raw = body["gateway_ip"]
    if raw is None:
        return None
    address = ipaddress.IPv4Address(ipv4_address("gateway_ip", raw))
    inside = address in net and (
        net.num_addresses <= 2 or address not in (net.network_address, net.broadcast_address)
    )
    if not inside:
        raise InvalidInput(reason=f"Gateway {address} is not valid on subnet {net}")
    return str(address)


def mac_address(value: Any) -> str:
    """A unicast MAC address, written as Neutron stores it: lower case, colons."""
    if not isinstance(value, str) or not _MAC.match(value):
        raise AttributeInvalid(attr="mac_address", reason=f"{_shown(value)} is not a valid MAC")
    mac = value.lower().replace("-", ":")
    if int(mac[:2], 16) & 1 or mac == "00:00:00:00:00:00":
        raise AttributeInvalid(
            attr="mac_address", reason=f"{_shown(value)} is not a valid unicast MAC address"
        )
    return mac


def fixed_ips(value: Any) -> FixedIp | None:
    """A new port's ``fixed_ips``: at most one entry here, with a subnet, an address or both."""
    if not isinstance(value, list) or not all(isinstance(e, dict) for e in value):
        raise AttributeInvalid(attr="fixed_ips", reason="Invalid data format for fixed IP")
    if not value:
        return None
    if len(value) > 1:
        raise InvalidInput(reason="a port has one fixed IP here; fixed_ips has more than one")
    entry = value[0]
    unknown = sorted(set(entry) - {"subnet_id", "ip_address"})
    if unknown:
        raise AttributeInvalid(
            attr="fixed_ips", reason=f"Invalid data format for fixed IP: '{unknown[0]}'"
        )
    subnet_id = entry.get("subnet_id")
    if subnet_id is not None and not isinstance(subnet_id, str):
        raise AttributeInvalid(attr="fixed_ips", reason=f"{_shown(subnet_id)} is not a valid UUID")
    address = entry.get("ip_address")
    return FixedIp(
        subnet_id=subnet_id,
        ip_address=ipv4_address("fixed_ips", address) if address is not None else None,
    )


@dataclass(frozen=True)
class Listing:
    """A list request's query: the filters by column and the fields to show."""

    filters: dict[str, list[Any]]
    fields: tuple[str, ...]


# A query parameter and the column it filters, with how its values are read.
def _same(attr: str, value: str) -> Any:
    return value


def _bool(attr: str, value: str) -> Any:
    return to_bool(attr, value)


def _int(attr: str, value: str) -> Any:
    if not value.strip().isdigit():
        raise AttributeInvalid(attr=attr, reason=f"'{value}' is not an integer")
    return int(value)


NETWORK_QUERY = {
    "id": ("id", _same), "name": ("name", _same), "shared": ("shared", _bool),
    "project_id": ("project_id", _same), "tenant_id": ("project_id", _same),
    "status": ("status", _same), "admin_state_up": ("admin_state_up", _bool),
}  # fmt: skip
SUBNET_QUERY = {
    "id": ("id", _same), "name": ("name", _same), "network_id": ("network_id", _same),
    "cidr": ("cidr", _same), "project_id": ("project_id", _same),
    "tenant_id": ("project_id", _same), "ip_version": ("ip_version", _int),
    "enable_dhcp": ("enable_dhcp", _bool),
}  # fmt: skip
PORT_QUERY = {
    "id": ("id", _same), "name": ("name", _same), "network_id": ("network_id", _same),
    "device_id": ("device_id", _same), "device_owner": ("device_owner", _same),
    "mac_address": ("mac_address", _same), "project_id": ("project_id", _same),
    "tenant_id": ("project_id", _same), "status": ("status", _same),
}  # fmt: skip
# Filters only an admin may use: the attribute is not shown to others.
ADMIN_PORT_QUERY = {"binding:host_id": ("binding_host_id", _same)}


def listing(
    params: Iterable[tuple[str, str]],
    known: Mapping[str, tuple[str, Any]],
    extra: Mapping[str, tuple[str, Any]] | None = None,
) -> Listing:
    """The filters of a list request; parameters Neutron would not filter on are ignored."""
    table = {**known, **(extra or {})}
    filters: dict[str, list[Any]] = {}
    fields: list[str] = []
    for key, value in params:
        if key == "fields":
            fields.extend(f for f in value.split(",") if f)
        elif key == "fixed_ips":
            column, _, wanted = value.partition("=")
            if column not in ("ip_address", "subnet_id") or not wanted:
                raise AttributeInvalid(attr="fixed_ips", reason=f"'{value}' is not a valid filter")
            filters.setdefault(column, []).append(wanted)
        elif key in table:
            column, read = table[key]
            filters.setdefault(column, []).append(read(key, value))
    return Listing(filters, tuple(fields))
