"""``/flavors``: list and show for everyone, create and delete for admins."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from resizeflow.api import views
from resizeflow.api.deps import Base, Ctx, Svc
from resizeflow.api.schemas import FlavorCreateBody
from resizeflow.compute.policy import RequestContext
from resizeflow.compute.queries import FlavorInfo

router = APIRouter(prefix="/flavors", tags=["flavors"])
Filter = Annotated[str | None, Query(max_length=255)]
MinValue = Annotated[int | None, Query(ge=0)]
Limit = Annotated[int | None, Query(ge=0, le=1000)]


def _list(
    svc: Any,
    ctx: RequestContext,
    is_public: str | None,
    min_ram: int | None,
    min_disk: int | None,
    limit: int | None,
) -> list[FlavorInfo]:
    # Nova: admins see private flavors too with is_public=None (or false).
    include_private = ctx.is_admin and (is_public or "").lower() in ("none", "false", "0")
    found: list[FlavorInfo] = svc.queries.flavors(include_private=include_private)
    if ctx.is_admin and (is_public or "").lower() in ("false", "0"):
        found = [f for f in found if not f.is_public]
    found = [
        f
        for f in found
        if (min_ram is None or f.memory_mb >= min_ram)
        and (min_disk is None or f.root_gb >= min_disk)
    ]
    return found[:limit] if limit is not None else found


@router.get("")
def list_flavors(
    svc: Svc,
    ctx: Ctx,
    base: Base,
    is_public: Filter = None,
    minRam: MinValue = None,
    minDisk: MinValue = None,
    limit: Limit = None,
) -> dict[str, Any]:
    """List flavors: id, name and links."""
    found = _list(svc, ctx, is_public, minRam, minDisk, limit)
    return {"flavors": [views.flavor_brief(f, base) for f in found]}


@router.get("/detail")
def list_flavors_detail(
    svc: Svc,
    ctx: Ctx,
    base: Base,
    is_public: Filter = None,
    minRam: MinValue = None,
    minDisk: MinValue = None,
    limit: Limit = None,
) -> dict[str, Any]:
    """List flavors with their sizes."""
    found = _list(svc, ctx, is_public, minRam, minDisk, limit)
    return {"flavors": [views.flavor(f, base) for f in found]}


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
