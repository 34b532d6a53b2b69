"""``/servers``: boot, list, show and delete."""

from __future__ import annotations

import ipaddress
import re
import secrets
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from resizeflow import errors
from resizeflow.api import views
from resizeflow.api.deps import (
    Base,
    Caller,
    QueryLimit,
    QueryText,
    Svc,
    Ver,
    changes_time,
    is_true,
)
from resizeflow.api.faults import HTTPFault
from resizeflow.api.microversion import Version
from resizeflow.api.schemas import ServerCreate, ServerCreateBody, check_server_create
from resizeflow.api.server_actions import worded_as
from resizeflow.compute.policy import RequestContext, allowed
from resizeflow.compute.volumes import boot_volumes
from resizeflow.openstack.base import PortRequest

router = APIRouter(prefix="/servers", tags=["servers"])
# Every status Nova knows; resizeflow's servers only ever show some of them.
STATUSES = frozenset(
    {
        "ACTIVE", "BUILD", "DELETED", "ERROR", "HARD_REBOOT", "MIGRATING", "PASSWORD",
        "PAUSED", "REBOOT", "REBUILD", "RESCUE", "RESIZE", "REVERT_RESIZE", "SHELVED",
        "SHELVED_OFFLOADED", "SHUTOFF", "SOFT_DELETED", "SUSPENDED", "UNKNOWN",
        "VERIFY_RESIZE",
    }
)  # fmt: skip


def is_all_tenants(raw: str | None) -> bool:
    """Nova's ``common.is_all_tenants``: present and empty means yes."""
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in ("", "1", "true", "yes", "on", "t", "y"):
        return True
    if value in ("0", "false", "no", "off", "f", "n"):
        return False
    raise HTTPFault(400, f"Invalid value '{raw}' for all_tenants: must be a boolean")


@dataclass
class ServerFilters:
    """The query parameters both server lists take."""

    all_tenants: QueryText = None
    status: QueryText = None
    name: QueryText = None
    host: QueryText = None
    project_id: QueryText = None
    limit: QueryLimit = None
    marker: QueryText = None
    changes_since: Annotated[str | None, Query(alias="changes-since", max_length=64)] = None
    changes_before: Annotated[str | None, Query(alias="changes-before", max_length=64)] = None
    locked: Annotated[str | None, Query(max_length=16)] = None  # 2.73


Filters = Annotated[ServerFilters, Depends()]


def _list(svc: Svc, caller: RequestContext, version: Version, f: ServerFilters) -> list[Any]:
    if f.status is not None and f.status.upper() not in STATUSES:
        # Nova 2.38+ refuses an unknown status; older versions return nothing.
        if version.at_least(38):
            raise HTTPFault(400, "Invalid status value")
        return []
    if f.name:
        try:
            re.compile(f.name)
        except re.error:
            # Nova's schema: the name filter must be a regular expression.
            raise HTTPFault(
                400,
                f"Invalid input for query parameters name. Value: {f.name}. "
                f"{f.name!r} is not a 'regex'",
            ) from None
    every = is_all_tenants(f.all_tenants)
    # Nova ignores admin-only filters for other callers.
    host = f.host if caller.is_admin else None
    return svc.queries.servers(
        caller,
        all_projects=every,
        project_id=f.project_id,
        status=f.status,
        name=f.name,
        host=host,
        limit=f.limit,
        marker=f.marker,
        changes_since=changes_time("changes-since", f.changes_since),
        changes_before=(
            changes_time("changes-before", f.changes_before) if version.at_least(66) else None
        ),
        locked=is_true("locked", f.locked) if version.at_least(73) and f.locked else None,
    )


def _page(
    request: Request, base: str, path: str, found: list[Any], f: ServerFilters
) -> dict[str, Any]:
    if f.limit is None or not found or len(found) < f.limit:
        return {}
    return {"servers_links": views.next_links(base, path, request.query_params, found[-1].uuid)}


@router.get("")
def list_servers(
    request: Request, svc: Svc, caller: Caller, base: Base, version: Ver, filters: Filters
) -> dict[str, Any]:
    """List servers: id, name and links."""
    found = _list(svc, caller, version, filters)
    return {
        "servers": [views.server_brief(s, base) for s in found],
        **_page(request, base, "servers", found, filters),
    }


@router.get("/detail")
def list_servers_detail(
    request: Request, svc: Svc, caller: Caller, base: Base, version: Ver, filters: Filters
) -> dict[str, Any]:
    """List servers with every detail."""
    found = _list(svc, caller, version, filters)
    admin = allowed(caller, "compute:servers:show:extended_attributes")
    return {
        "servers": [views.server(s, version, base, admin=admin) for s in found],
        **_page(request, base, "servers/detail", found, filters),
    }


@router.get("/{server_id}")
def show_server(
    server_id: str, svc: Svc, caller: Caller, base: Base, version: Ver
) -> dict[str, Any]:
    """Show one server."""
    info = svc.queries.server(caller, server_id)
    admin = allowed(caller, "compute:servers:show:extended_attributes", info.project_id)
    return {"server": views.server(info, version, base, admin=admin, show=True)}


def _networks(server: ServerCreate, version: Version) -> tuple[PortRequest, ...]:
    """The NICs asked for: the default network's unless ``none`` or a list says otherwise."""
    nets = server.networks
    if nets is None:
        if version.at_least(37):
            raise errors.ValidationError(
                field="server",
                value=server.model_dump(by_alias=True, exclude_unset=True),
                reason="'networks' is a required property",
            )
        return (PortRequest(),)
    if nets == "none":
        return ()
    if nets == "auto":
        return (PortRequest(),)
    requests = []
    for n in nets:
        if n.port is not None:
            requests.append(PortRequest(port_id=n.port))
        elif n.uuid is not None:
            requests.append(PortRequest(network_id=n.uuid, address=_fixed_ip(n.fixed_ip)))
        else:
            raise errors.ValidationError(
                field="server.networks", value="...", reason="each network needs a uuid or a port"
            )
    return tuple(requests)


def _fixed_ip(address: str | None) -> str | None:
    """A requested fixed IP, as Nova's schema takes it: an IPv4 or IPv6 address."""
    if address is None:
        return None
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        raise errors.ValidationError(
            field="fixed_ip",
            value=address,
            reason=f"'{address}' is not valid under any of the given schemas",
        ) from None


def _forced_host(zone: str | None) -> str | None:
    """``nova``, ``nova:HOST`` or ``nova:HOST:NODE``; other zones do not exist here."""
    if zone is None:
        return None
    name, _, rest = zone.partition(":")
    if name != "nova":
        raise HTTPFault(400, "The requested availability zone is not available")
    host = rest.partition(":")[0]
    return host or None


@router.post("", status_code=202)
def create_server(
    body: ServerCreateBody,
    response: Response,
    svc: Svc,
    caller: Caller,
    base: Base,
    version: Ver,
) -> dict[str, Any]:
    """Boot a server from a flavor; an admin may force a host with ``nova:HOST``."""
    server = body.server
    check_server_create(body, version)
    networks = _networks(server, version)
    host = server.host or _forced_host(server.availability_zone)
    try:
        uuid = svc.compute.create(
            caller,
            name=server.name,
            flavor_ref=server.flavorRef,
            host=host,
            networks=networks,
            metadata=dict(server.metadata or {}),
            image_ref=server.imageRef or None,
            description=server.description if version.at_least(19) else None,
            volumes=boot_volumes(server.block_device_mapping_v2),
        )
    except errors.FlavorNotFound as exc:
        # Nova answers an unknown flavor with the exception's own message.
        raise HTTPFault(400, exc.message) from None
    except (errors.ComputeHostNotFound, errors.NoValidHost, errors.VolumeNotFound) as exc:
        # Nova answers a volume of the mapping it cannot find with 400, too.
        raise HTTPFault(400, exc.message) from None
    response.headers["Location"] = views.links(base, "servers", uuid)[0]["href"]
    return {
        "server": {
            "id": uuid,
            "links": views.links(base, "servers", uuid),
            "OS-DCF:diskConfig": server.disk_config or "MANUAL",
            "security_groups": [{"name": "default"}],
            "adminPass": secrets.token_urlsafe(12),
        }
    }


@router.delete("/{server_id}", status_code=204)
def delete_server(server_id: str, svc: Svc, caller: Caller) -> Response:
    """Delete a server in any state; a workflow in flight is ended first (see the service)."""
    with worded_as("delete"):
        svc.compute.delete(caller, server_id)
    return Response(status_code=204)
