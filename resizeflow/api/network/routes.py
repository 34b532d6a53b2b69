"""``/v2.0``: Neutron's networks, subnets and ports, and what the API offers.

Reads and changes go through the network service
(:class:`~resizeflow.openstack.neutron.NetworkService`); here a request's
body and query are checked, its caller's scope chosen, its answer shaped.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from starlette.responses import Response

from resizeflow.api.deps import Base, Caller, Svc
from resizeflow.api.network import schema, views
from resizeflow.api.network.faults import ExtensionNotFound
from resizeflow.api.network.views import V2
from resizeflow.compute.policy import RequestContext, allowed
from resizeflow.openstack.neutron_errors import InvalidInput, PolicyNotAuthorized

router = APIRouter(prefix=V2, tags=["network"])
AnyBody = Annotated[Any, Body()]
NETWORK_ATTRS = ("name", "description", "admin_state_up", "shared", "router:external")
SUBNET_ATTRS = (
    "network_id", "cidr", "ip_version", "gateway_ip", "enable_dhcp", "name", "description",
    "allocation_pools", "dns_nameservers", "host_routes", "subnetpool_id",
)  # fmt: skip
PORT_ATTRS = (
    "network_id", "name", "description", "mac_address", "fixed_ips", "device_id",
    "device_owner", "admin_state_up", "security_groups", "binding:vnic_type",
)  # fmt: skip


def scope(caller: RequestContext) -> str | None:
    """The project whose resources a caller sees: none for an admin, who sees all."""
    return None if caller.is_admin else caller.project_id


def _may(caller: RequestContext, rule: str, project_id: str) -> None:
    """Neutron's rule ``rule`` (its defaults: a project's readers read, its members
    write, an admin does both) for a resource of ``project_id``."""
    if not allowed(caller, f"network:{rule}", project_id):
        raise PolicyNotAuthorized(action=rule)


def _fields(request: Request) -> tuple[str, ...]:
    return schema.listing(request.query_params.multi_items(), {}).fields


@router.get("")
@router.get("/")
def index(base: Base) -> dict[str, Any]:
    return views.resources(base)


@router.get("/extensions")
def list_extensions(caller: Caller) -> dict[str, Any]:
    return {"extensions": views.extensions()}


@router.get("/extensions/{alias}")
def show_extension(caller: Caller, alias: str) -> Any:
    found = views.extension(alias)
    if found is None:
        raise ExtensionNotFound(alias=alias)
    return {"extension": found}


# -- networks ---------------------------------------------------------------------
@router.get("/networks")
def list_networks(request: Request, svc: Svc, caller: Caller) -> dict[str, Any]:
    _may(caller, "get_network", caller.project_id)
    q = schema.listing(request.query_params.multi_items(), schema.NETWORK_QUERY)
    found = svc.network.networks(scope(caller), q.filters)
    return {"networks": [views.pick(views.network(n, caller.is_admin), q.fields) for n in found]}


@router.get("/networks/{network_id}")
def show_network(request: Request, svc: Svc, caller: Caller, network_id: str) -> dict[str, Any]:
    _may(caller, "get_network", caller.project_id)
    net = svc.network.network(scope(caller), network_id)
    return {"network": views.pick(views.network(net, caller.is_admin), _fields(request))}


@router.post("/networks", status_code=201)
def create_network(svc: Svc, caller: Caller, payload: AnyBody) -> dict[str, Any]:
    _may(caller, "create_network", caller.project_id)
    body = schema.section(payload, "network")
    schema.only(body, NETWORK_ATTRS)
    if schema.flag(body, "router:external", False):
        raise InvalidInput(reason="external networks are not supported here")
    shared = schema.flag(body, "shared", False)
    if shared and not caller.is_admin:
        raise PolicyNotAuthorized(action="create_network:shared")
    net = svc.network.create_network(
        schema.owner(body, caller.project_id, caller.is_admin, "create_network"),
        name=schema.text(body, "name"),
        description=schema.text(body, "description"),
        admin_state_up=schema.flag(body, "admin_state_up", True),
        shared=shared,
    )
    return {"network": views.network(net, caller.is_admin)}


@router.delete("/networks/{network_id}", status_code=204)
def delete_network(svc: Svc, caller: Caller, network_id: str) -> Response:
    # Another project's network is not found (404) before any rule is weighed.
    _may(caller, "delete_network", svc.network.network(scope(caller), network_id).project_id)
    svc.network.delete_network(scope(caller), network_id)
    return Response(status_code=204)


# -- subnets ----------------------------------------------------------------------
@router.get("/subnets")
def list_subnets(request: Request, svc: Svc, caller: Caller) -> dict[str, Any]:
    _may(caller, "get_subnet", caller.project_id)
    q = schema.listing(request.query_params.multi_items(), schema.SUBNET_QUERY)
    found = svc.network.subnets(scope(caller), q.filters)
    return {"subnets": [views.pick(views.subnet(s), q.fields) for s in found]}


@router.get("/subnets/{subnet_id}")
def show_subnet(request: Request, svc: Svc, caller: Caller, subnet_id: str) -> dict[str, Any]:
    _may(caller, "get_subnet", caller.project_id)
    sub = svc.network.subnet(scope(caller), subnet_id)
    return {"subnet": views.pick(views.subnet(sub), _fields(request))}


@router.post("/subnets", status_code=201)
def create_subnet(svc: Svc, caller: Caller, payload: AnyBody) -> dict[str, Any]:
    _may(caller, "create_subnet", caller.project_id)
    body = schema.section(payload, "subnet")
    schema.only(body, SUBNET_ATTRS)
    network_id = schema.required_text(body, "network_id")
    schema.ip_version(schema.required(body, "ip_version"))
    cidr = schema.cidr(schema.required(body, "cidr"))
    schema.empty_or_absent(
        body,
        ("allocation_pools", "dns_nameservers", "host_routes", "subnetpool_id"),
        "the pool is the subnet's host addresses but the gateway",
    )
    sub = svc.network.create_subnet(
        schema.owner(body, caller.project_id, caller.is_admin, "create_subnet"),
        scope(caller),
        network_id=network_id,
        cidr=cidr,
        gateway_ip=schema.gateway(body, cidr),
        name=schema.text(body, "name"),
        description=schema.text(body, "description"),
        enable_dhcp=schema.flag(body, "enable_dhcp", True),
    )
    return {"subnet": views.subnet(sub)}


@router.delete("/subnets/{subnet_id}", status_code=204)
def delete_subnet(svc: Svc, caller: Caller, subnet_id: str) -> Response:
    # Another project's subnet is not found (404) before any rule is weighed.
    _may(caller, "delete_subnet", svc.network.subnet(scope(caller), subnet_id).project_id)
    svc.network.delete_subnet(scope(caller), subnet_id)
    return Response(status_code=204)


# -- ports ------------------------------------------------------------------------
@router.get("/ports")
def list_ports(request: Request, svc: Svc, caller: Caller) -> dict[str, Any]:
    _may(caller, "get_port", caller.project_id)
    admin_only = schema.ADMIN_PORT_QUERY if caller.is_admin else None
    q = schema.listing(request.query_params.multi_items(), schema.PORT_QUERY, admin_only)
    found = svc.network.ports(scope(caller), q.filters)
    return {"ports": [views.pick(views.port(p, caller.is_admin), q.fields) for p in found]}


@router.get("/ports/{port_id}")
def show_port(request: Request, svc: Svc, caller: Caller, port_id: str) -> dict[str, Any]:
    _may(caller, "get_port", caller.project_id)
    port = svc.network.port(scope(caller), port_id)
    return {"port": views.pick(views.port(port, caller.is_admin), _fields(request))}


@router.post("/ports", status_code=201)
def create_port(svc: Svc, caller: Caller, payload: AnyBody) -> dict[str, Any]:
    _may(caller, "create_port", caller.project_id)
    body = schema.section(payload, "port")
    schema.only(body, PORT_ATTRS)
    network_id = schema.required_text(body, "network_id")
    schema.empty_or_absent(body, ("security_groups",), "no security groups")
    if body.get("binding:vnic_type", "normal") != "normal":
        raise InvalidInput(reason="binding:vnic_type must be normal here")
    device_owner = schema.text(body, "device_owner")
    if device_owner.startswith("network:") and not caller.is_admin:
        raise PolicyNotAuthorized(action="create_port:device_owner")
    mac = body.get("mac_address")
    port = svc.network.create_port(
        schema.owner(body, caller.project_id, caller.is_admin, "create_port"),
        scope(caller),
        network_id=network_id,
        name=schema.text(body, "name"),
        description=schema.text(body, "description"),
        mac_address=schema.mac_address(mac) if mac is not None else None,
        fixed_ip=schema.fixed_ips(body["fixed_ips"]) if "fixed_ips" in body else None,
        device_id=schema.text(body, "device_id"),
        device_owner=device_owner,
        admin_state_up=schema.flag(body, "admin_state_up", True),
    )
    return {"port": views.port(port, caller.is_admin)}


@router.delete("/ports/{port_id}", status_code=204)
def delete_port(svc: Svc, caller: Caller, port_id: str) -> Response:
    # Another project's port is not found (404) before any rule is weighed.
    _may(caller, "delete_port", svc.network.port(scope(caller), port_id).project_id)
    svc.network.delete_port(scope(caller), port_id)
    return Response(status_code=204)
