"""``/flavors``: list and show for everyone, create and delete for admins."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from resizeflow import errors
from resizeflow.api import views
from resizeflow.api.deps import Base, Caller, QueryLimit, QueryText, Svc, Ver
from resizeflow.api.schemas import FlavorCreateBody
from resizeflow.compute.policy import RequestContext
from resizeflow.compute.queries.infos import FlavorInfo

router = APIRouter(prefix="/flavors", tags=["flavors"])
MinValue = Annotated[int | None, Query(ge=0)]


@dataclass
class FlavorFilters:
    """The query parameters both flavor lists take (Nova's names)."""

    is_public: QueryText = None
    minRam: MinValue = None
    minDisk: MinValue = None
    limit: QueryLimit = None


Filters = Annotated[FlavorFilters, Depends()]


def _list(svc: Any, caller: RequestContext, f: FlavorFilters) -> list[FlavorInfo]:
    public = (f.is_public or "").lower()
    # Nova: admins see private flavors too with is_public=None (or false).
    include_private = caller.is_admin and public in ("none", "false", "0")
    found: list[FlavorInfo] = svc.queries.flavors(include_private=include_private)
    if caller.is_admin and public in ("false", "0"):
        found = [x for x in found if not x.is_public]
    found = [
        x
        for x in found
        if (f.minRam is None or x.memory_mb >= f.minRam)
        and (f.minDisk is None or x.root_gb >= f.minDisk)
    ]
    return found[: f.limit] if f.limit is not None else found


def _page(
    request: Request, base: str, path: str, found: list[FlavorInfo], f: FlavorFilters
) -> dict[str, Any]:
    if f.limit is None or not found or len(found) < f.limit:
        return {}
    return {"flavors_links": views.next_links(base, path, request.query_params, found[-1].flavorid)}


@router.get("")
def list_flavors(
    request: Request, svc: Svc, caller: Caller, base: Base, version: Ver, filters: Filters
) -> dict[str, Any]:
    """List flavors: id, name and links (and description from 2.55)."""
    found = _list(svc, caller, filters)
    return {
        "flavors": [views.flavor_brief(f, base, version) for f in found],
        **_page(request, base, "flavors", found, filters),
    }


@router.get("/detail")
def list_flavors_detail(
    request: Request, svc: Svc, caller: Caller, base: Base, version: Ver, filters: Filters
) -> dict[str, Any]:
    """List flavors with their sizes."""
    found = _list(svc, caller, filters)
    return {
        "flavors": [views.flavor(f, base, version) for f in found],
        **_page(request, base, "flavors/detail", found, filters),
    }


@router.get("/{flavor_id}")
def show_flavor(
    flavor_id: str, svc: Svc, caller: Caller, base: Base, version: Ver
) -> dict[str, Any]:
    """Show one flavor."""
    return {"flavor": views.flavor(svc.queries.flavor(flavor_id), base, version)}


@router.get("/{flavor_id}/os-extra_specs")
def flavor_extra_specs(flavor_id: str, svc: Svc, caller: Caller) -> dict[str, Any]:
    """A flavor's extra specs: resizeflow keeps none."""
    svc.queries.flavor(flavor_id)
    return {"extra_specs": {}}


@router.post("")
def create_flavor(
    body: FlavorCreateBody, svc: Svc, caller: Caller, base: Base, version: Ver
) -> dict[str, Any]:
    """Create a flavor (admin)."""
    f = body.flavor
    if "description" in f.model_fields_set and not version.at_least(55):
        shown = f.model_dump(by_alias=True, exclude_unset=True)
        raise errors.ValidationError(
            field="flavor",
            value=repr(shown),
            reason="Additional properties are not allowed ('description' was unexpected)",
        )
    info = svc.flavors.create(
        caller,
        name=f.name,
        ram=f.ram,
        vcpus=f.vcpus,
        disk=f.disk,
        flavorid=f.id,
        ephemeral=f.ephemeral,
        swap=f.swap,
        is_public=f.is_public,
        description=f.description,
    )
    return {"flavor": views.flavor(info, base, version)}


@router.delete("/{flavor_id}", status_code=202)
def delete_flavor(flavor_id: str, svc: Svc, caller: Caller) -> Response:
    """Delete a flavor (admin); servers keep their embedded copy."""
    svc.flavors.delete(caller, flavor_id)
    return Response(status_code=202)
