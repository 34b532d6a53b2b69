"""``/flavors``: list and show for everyone, create and delete for admins."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response

from resizeflow.api import views
from resizeflow.api.deps import Base, Ctx, QueryLimit, QueryText, Svc
from resizeflow.api.schemas import FlavorCreateBody
from resizeflow.compute.policy import RequestContext
from resizeflow.compute.queries import FlavorInfo

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


def _list(svc: Any, ctx: RequestContext, f: FlavorFilters) -> list[FlavorInfo]:
    public = (f.is_public or "").lower()
    # Nova: admins see private flavors too with is_public=None (or false).
    include_private = ctx.is_admin and public in ("none", "false", "0")
    found: list[FlavorInfo] = svc.queries.flavors(include_private=include_private)
    if ctx.is_admin and public in ("false", "0"):
        found = [x for x in found if not x.is_public]
    found = [
        x
        for x in found
        if (f.minRam is None or x.memory_mb >= f.minRam)
        and (f.minDisk is None or x.root_gb >= f.minDisk)
    ]
    return found[: f.limit] if f.limit is not None else found


@router.get("")
def list_flavors(svc: Svc, ctx: Ctx, base: Base, filters: Filters) -> dict[str, Any]:
    """List flavors: id, name and links."""
    return {"flavors": [views.flavor_brief(f, base) for f in _list(svc, ctx, filters)]}


@router.get("/detail")
def list_flavors_detail(svc: Svc, ctx: Ctx, base: Base, filters: Filters) -> dict[str, Any]:
    """List flavors with their sizes."""
    return {"flavors": [views.flavor(f, base) for f in _list(svc, ctx, filters)]}


@router.get("/{flavor_id}")
def show_flavor(flavor_id: str, svc: Svc, ctx: Ctx, base: Base) -> dict[str, Any]:
    """Show one flavor."""
    return {"flavor": views.flavor(svc.queries.flavor(flavor_id), base)}


@router.get("/{flavor_id}/os-extra_specs")
def flavor_extra_specs(flavor_id: str, svc: Svc, ctx: Ctx) -> dict[str, Any]:
    """A flavor's extra specs: resizeflow keeps none."""
    svc.queries.flavor(flavor_id)
    return {"extra_specs": {}}


@router.post("")
def create_flavor(body: FlavorCreateBody, svc: Svc, ctx: Ctx, base: Base) -> dict[str, Any]:
    """Create a flavor (admin)."""
    f = body.flavor
    info = svc.flavors.create(
        ctx,
        name=f.name,
        ram=f.ram,
        vcpus=f.vcpus,
        disk=f.disk,
        flavorid=f.id,
        ephemeral=f.ephemeral,
        swap=f.swap,
        is_public=f.is_public,
    )
    return {"flavor": views.flavor(info, base)}


@router.delete("/{flavor_id}", status_code=202)
def delete_flavor(flavor_id: str, svc: Svc, ctx: Ctx) -> Response:
    """Delete a flavor (admin); servers keep their embedded copy."""
    svc.flavors.delete(ctx, flavor_id)
    return Response(status_code=202)
