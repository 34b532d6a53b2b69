"""``/images``: Nova's read-only image proxy, enough for clients to pick an image to boot."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from resizeflow.api import views
from resizeflow.api.deps import Base, Caller, Svc
from resizeflow.api.faults import HTTPFault
from resizeflow.compute.images import ImageService
from resizeflow.openstack.images import ImageMeta, isotime

router = APIRouter(prefix="/images", tags=["images"])
# Nova's view of a Glance status, and the progress it shows for it.
_STATUS = {"queued": ("SAVING", 25), "saving": ("SAVING", 50), "active": ("ACTIVE", 100)}


def _service(svc: Any) -> ImageService:
    return ImageService(svc.compute.settings)


def _brief(m: ImageMeta, base: str) -> dict[str, Any]:
    return {"id": m.id, "name": m.name, "links": views.links(base, "images", m.id)}


def _detail(m: ImageMeta, base: str) -> dict[str, Any]:
    return {
        **_brief(m, base),
        "status": _STATUS.get(m.status, ("UNKNOWN", 0))[0],
        "progress": _STATUS.get(m.status, ("UNKNOWN", 0))[1],
        "minDisk": m.min_disk,
        "minRam": m.min_ram,
        "created": isotime(m.created_at),
        "updated": isotime(m.updated_at or m.created_at),
        "metadata": dict(m.properties),
        "OS-EXT-IMG-SIZE:size": m.size,
    }


@router.get("")
def list_images(svc: Svc, caller: Caller, base: Base) -> dict[str, Any]:
    """List images: id, name and links."""
    return {"images": [_brief(m, base) for m in _service(svc).list(caller)]}


@router.get("/detail")
def list_images_detail(svc: Svc, caller: Caller, base: Base) -> dict[str, Any]:
    """List images with their status, sizes and metadata."""
    return {"images": [_detail(m, base) for m in _service(svc).list(caller)]}


@router.get("/{image_id}")
def show_image(image_id: str, svc: Svc, caller: Caller, base: Base) -> dict[str, Any]:
    meta = _service(svc).get(caller, image_id)
    if meta is None:
        raise HTTPFault(404, "Image not found.")
    return {"image": _detail(meta, base)}
