"""``/volume``: Cinder's version document and Block Storage v3 volumes.

Project-scoped as Cinder's default policy is: a volume of another project is
not found; an admin reaches any volume by id and lists every project's with
``all_tenants``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query
from starlette.responses import JSONResponse, Response

from resizeflow.api import volume_version
from resizeflow.api import volume_views as views
from resizeflow.api.deps import Base, Caller, Svc, Ver, is_true
from resizeflow.api.faults import HTTPFault, shown_value
from resizeflow.compute.policy import RequestContext, authorize
from resizeflow.openstack.cinder import VolumeInfo

router = APIRouter(tags=["volumes"])
# A JSON body read as it comes, so that its faults get Cinder's messages.
AnyBody = Annotated[Any, Body()]
V3 = views.V3
MAX_INT = 2**31 - 1
# Where a volume's data would come from in Cinder; here a volume starts empty.
UNSUPPORTED_SOURCES = ("snapshot_id", "source_volid", "imageRef", "backup_id", "group_id")


@router.get(volume_version.PREFIX)
@router.get(volume_version.PREFIX + "/")
def versions(base: Base) -> Response:
    """Every Block Storage version, as Cinder lists them: 300 Multiple Choices."""
    return JSONResponse({"versions": [views.version_entry(base)]}, status_code=300)


@router.get(V3)
@router.get(V3 + "/")
def current_version(base: Base) -> dict[str, Any]:
    return {"versions": [views.version_entry(base)]}


def scope(caller: RequestContext) -> str | None:
    """The project a request by id is limited to: none for an admin."""
    return None if caller.is_admin else caller.project_id


def _invalid(field: str, value: Any, reason: str) -> HTTPFault:
    return HTTPFault(
        400, f"Invalid input for field/attribute {field}. Value: {shown_value(value)}. {reason}"
    )


def _text(body: dict[str, Any], field: str) -> str | None:
    value = body.get(field)
    if value is not None and not isinstance(value, str):
        raise _invalid(field, value, f"{shown_value(value)} is not of type 'string', 'null'")
    if value is not None and len(value) > 255:
        raise _invalid(field, value, f"{shown_value(value)} is too long")
    return value


def _size(body: dict[str, Any]) -> int:
    """Cinder's volume size: an integer, or a string of digits, from 1 GiB."""
    raw = body.get("size")
    if raw is None:
        raise _invalid("size", raw, "'size' is a required property")
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise _invalid("size", raw, f"{shown_value(raw)} is not of type 'integer', 'string'")
    if isinstance(raw, str):
        if not raw.isdigit():
            raise _invalid("size", raw, f"{shown_value(raw)} does not match '^[0-9]+$'")
        raw = int(raw)
    if raw < 1:
        raise _invalid("size", raw, f"{raw} is less than the minimum of 1")
    if raw > MAX_INT:
        raise _invalid("size", raw, f"{raw} is greater than the maximum of {MAX_INT}")
    return raw


def _section(payload: Any, key: str) -> dict[str, Any]:
    if not isinstance(payload, dict) or not isinstance(payload.get(key), dict):
        raise HTTPFault(400, f"Missing required element '{key}' in request body.")
    section: dict[str, Any] = payload[key]
    return section


def _check_create(body: dict[str, Any]) -> None:
    """Refuse what a volume here cannot be, rather than ignore it."""
    for source in UNSUPPORTED_SOURCES:
        if body.get(source) is not None:
            raise HTTPFault(400, f"Invalid input received: {source} is not supported here")
    if body.get("volume_type") not in (None, "__DEFAULT__"):
        raise HTTPFault(404, f"Volume type with name {body['volume_type']} could not be found.")
    if body.get("availability_zone") not in (None, "nova"):
        raise HTTPFault(
            400,
            f"Invalid input received: Availability zone '{body['availability_zone']}' is invalid.",
        )
    if body.get("metadata"):
        raise HTTPFault(400, "Invalid input received: volume metadata is not supported here")
    if body.get("multiattach") not in (None, False):
        raise HTTPFault(400, "Invalid input received: multiattach is not supported here")


@router.post(V3 + "/volumes", status_code=202)
def create_volume(
    svc: Svc, caller: Caller, base: Base, version: Ver, payload: AnyBody
) -> dict[str, Any]:
    """Create an empty volume; one larger than the storage host's free space is refused (413)."""
    body = _section(payload, "volume")
    size = _size(body)
    name = _text(body, "name") if "name" in body else _text(body, "display_name")
    description = _text(body, "description")
    _check_create(body)
    authorize(caller, "volume:create", caller.project_id)
    vol = svc.volumes.create(caller.project_id, caller.user_id, size, name, description)
    return {"volume": views.volume(base, vol, version, caller.is_admin)}


@dataclass
class VolumeFilters:
    """The list filters Cinder's clients send (``openstack volume list --name/--status``)."""

    all_tenants: Annotated[str | None, Query()] = None
    name: Annotated[str | None, Query()] = None
    status: Annotated[str | None, Query()] = None


Filters = Annotated[VolumeFilters, Depends()]


def _listed(svc: Any, caller: RequestContext, f: VolumeFilters) -> list[VolumeInfo]:
    authorize(caller, "volume:get_all", caller.project_id)
    everyone = caller.is_admin and is_true("all_tenants", f.all_tenants)
    found: list[VolumeInfo] = svc.volumes.volumes(None if everyone else caller.project_id)
    return [
        v
        for v in found
        if (f.name is None or v.name == f.name) and (f.status is None or v.status == f.status)
    ]


@router.get(V3 + "/volumes")
def list_volumes(svc: Svc, caller: Caller, base: Base, filters: Filters) -> dict[str, Any]:
    return {"volumes": [views.volume_brief(base, v) for v in _listed(svc, caller, filters)]}


@router.get(V3 + "/volumes/detail")
def list_volumes_detail(
    svc: Svc, caller: Caller, base: Base, version: Ver, filters: Filters
) -> dict[str, Any]:
    return {
        "volumes": [
            views.volume(base, v, version, caller.is_admin) for v in _listed(svc, caller, filters)
        ]
    }


@router.get(V3 + "/volumes/{volume_id}")
def show_volume(
    svc: Svc, caller: Caller, base: Base, version: Ver, volume_id: str
) -> dict[str, Any]:
    authorize(caller, "volume:get", caller.project_id)
    vol = svc.volumes.get(volume_id, scope(caller))
    return {"volume": views.volume(base, vol, version, caller.is_admin)}


@router.put(V3 + "/volumes/{volume_id}")
def update_volume(
    svc: Svc,
    caller: Caller,
    base: Base,
    version: Ver,
    volume_id: str,
    payload: AnyBody,
) -> dict[str, Any]:
    """Rename a volume or change its description (Cinder's legacy display_* names too)."""
    body = _section(payload, "volume")
    changes: dict[str, str | None] = {}
    for field, legacy in (("name", "display_name"), ("description", "display_description")):
        for key in (field, legacy):
            if key in body:
                changes[field] = _text(body, key)
    unknown = sorted(set(body) - {"name", "display_name", "description", "display_description"})
    if unknown:
        raise HTTPFault(
            400,
            f"Invalid input for field/attribute volume. Value: {shown_value(body)}. "
            f"Additional properties are not allowed ({', '.join(repr(k) for k in unknown)} "
            f"{'was' if len(unknown) == 1 else 'were'} unexpected)",
        )
    if not changes:
        raise HTTPFault(400, "Missing required element 'volume' in request body.")
    # Another project's volume is not found (404) before the rule is weighed.
    authorize(caller, "volume:update", svc.volumes.get(volume_id, scope(caller)).project_id)
    vol = svc.volumes.update(volume_id, scope(caller), changes)
    return {"volume": views.volume(base, vol, version, caller.is_admin)}


@router.delete(V3 + "/volumes/{volume_id}", status_code=202)
def delete_volume(svc: Svc, caller: Caller, volume_id: str) -> Response:
    """Delete an unattached volume and its data; an attached one is refused (400)."""
    authorize(caller, "volume:delete", svc.volumes.get(volume_id, scope(caller)).project_id)
    svc.volumes.delete(volume_id, scope(caller))
    return Response(status_code=202)
