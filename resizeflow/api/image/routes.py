"""``/v2/images``: Glance's images API over the image store.

Who may do what is Glance's default policy: a project sees its own images and
the public ones (an admin sees all); only the owner's project or an admin
changes, uploads to or deletes an image; only an admin publishes one.
Another project's private image is not found, not forbidden.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Annotated, Any, BinaryIO

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response, StreamingResponse

from resizeflow.api.auth import Authenticator
from resizeflow.api.deps import request_id, token_header
from resizeflow.api.image import patch, schema, views
from resizeflow.api.image.faults import GlanceFault
from resizeflow.compute.policy import RequestContext, allowed
from resizeflow.openstack.images import CHUNK, ImageMeta, ImageStore, now

router = APIRouter(prefix="/v2/images", tags=["images"])


def store(request: Request) -> ImageStore:
    found: ImageStore = request.app.state.store
    return found


def caller(request: Request, token: Annotated[str | None, Depends(token_header)]) -> RequestContext:
    # The compute API's token header and request id; the authenticator is the image app's.
    auth: Authenticator = request.app.state.auth
    return auth.identify(token).context(request_id(request))


Store = Annotated[ImageStore, Depends(store)]
Caller = Annotated[RequestContext, Depends(caller)]


def _visible(images: ImageStore, ctx: RequestContext, image_id: str) -> ImageMeta:
    meta = images.get_visible(image_id, ctx.project_id, ctx.is_admin)
    if meta is None:
        raise GlanceFault(404, f"No image found with ID {image_id}")
    return meta


def _authorize(ctx: RequestContext, action: str, owner: str | None) -> None:
    """Glance's rule ``action`` (its defaults: a project's readers read, its members
    write, an admin does both) for an image owned by ``owner``."""
    # An image without an owner belongs to no project: only an admin writes it.
    if not allowed(ctx, f"image:{action}", owner or ""):
        raise GlanceFault(403, f"You are not authorized to complete {action} action.")


def _check_visibility(ctx: RequestContext, visibility: Any) -> None:
    if visibility == "public" and not ctx.is_admin:
        raise GlanceFault(403, "You are not authorized to complete publicize_image action.")


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        raise GlanceFault(400, "Body expected in request.")
    try:
        return json.loads(raw)
    except ValueError:
        raise GlanceFault(400, "Malformed JSON in request body.") from None


def _meta_of(image_id: str, fields: dict[str, Any], base: ImageMeta | None) -> ImageMeta:
    """An ImageMeta with ``fields`` (schema-valid base fields and extra properties)."""
    props = {k: v for k, v in fields.items() if k not in schema.BASE and k != "id"}
    values = {k: fields[k] for k in schema.BASE if k in fields}
    if base is None:
        base = ImageMeta(id=image_id, name=None, disk_format=None, container_format=None)
    return replace(base, properties=props, **values)


def _editable(meta: ImageMeta) -> dict[str, Any]:
    """The fields a patch works on: the writable base fields and the extra properties."""
    return {**meta.properties, **{k: getattr(meta, k) for k in schema.BASE}}


@router.post("", status_code=201)
async def create_image(request: Request, images: Store, ctx: Caller) -> JSONResponse:
    body = await _json_body(request)
    if isinstance(body, dict):
        for key in body:
            if key != "id":
                schema.check_writable(key)
        for key in body:
            if len(key) > 255:
                raise GlanceFault(400, "Custom property should not be greater than 255 characters.")
    schema.validate(body)
    _authorize(ctx, "add_image", ctx.project_id)
    fields = {"visibility": "shared", "owner": ctx.project_id, **body}
    _check_visibility(ctx, fields["visibility"])
    if fields["owner"] != ctx.project_id and not ctx.is_admin:
        raise GlanceFault(
            403, f"You are not permitted to create images owned by '{fields['owner']}'."
        )
    image_id = str(body.get("id") or uuid.uuid4()).lower()
    if images.get(image_id) is not None:
        raise GlanceFault(409, f"Image with identifier {image_id} already exists!")
    meta = images.create(_meta_of(image_id, fields, None))
    view = views.show(meta)
    return JSONResponse(view, 201, headers={"Location": view["self"]})


@router.get("")
def list_images(request: Request, images: Store, ctx: Caller) -> dict[str, Any]:
    _authorize(ctx, "get_images", ctx.project_id)
    params: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        params.setdefault(key, []).append(value)
    return views.page(images.list(), params, ctx.project_id, ctx.is_admin)


@router.get("/{image_id}")
def show_image(image_id: str, images: Store, ctx: Caller) -> dict[str, Any]:
    _authorize(ctx, "get_image", ctx.project_id)
    return views.show(_visible(images, ctx, image_id))


@router.patch("/{image_id}")
async def update_image(
    image_id: str, request: Request, images: Store, ctx: Caller
) -> dict[str, Any]:
    media = request.headers.get("content-type", "").split(";")[0].strip()
    if media not in patch.MEDIA_TYPES:
        raise GlanceFault(
            415,
            f"The request media type {media} is not supported by this server.",
            {"Accept-Patch": ", ".join(patch.MEDIA_TYPES)},
        )
    meta = _visible(images, ctx, image_id)
    _authorize(ctx, "modify_image", meta.owner)
    changes = await _json_body(request)
    fields = patch.apply(_editable(meta), changes, meta.status)
    if fields.get("visibility") != meta.visibility:
        _check_visibility(ctx, fields.get("visibility"))
    if fields.get("owner") != meta.owner and not ctx.is_admin:
        raise GlanceFault(403, "You are not authorized to complete modify_image action.")
    # The data may have arrived while the patch was checked: write over the newest.
    current = images.get(image_id) or meta
    updated = replace(_meta_of(image_id, fields, current), updated_at=now())
    images.save(updated)
    return views.show(updated)


@router.delete("/{image_id}", status_code=204)
def delete_image(image_id: str, images: Store, ctx: Caller) -> Response:
    meta = images.get_visible(image_id, ctx.project_id, ctx.is_admin)
    if meta is None:
        raise GlanceFault(404, f"Failed to find image {image_id} to delete")
    _authorize(ctx, "delete_image", meta.owner)
    if meta.protected:
        raise GlanceFault(403, f"Image {image_id} is protected and cannot be deleted.")
    images.delete(image_id)
    return Response(status_code=204)


@router.put("/{image_id}/file", status_code=204)
async def upload_image(image_id: str, request: Request, images: Store, ctx: Caller) -> Response:
    media = request.headers.get("content-type", "application/octet-stream").split(";")[0]
    if media.strip() != "application/octet-stream":
        raise GlanceFault(415, f"Invalid content type {media}")
    meta = _visible(images, ctx, image_id)
    _authorize(ctx, "upload_image", meta.owner)
    upload = await run_in_threadpool(images.begin_upload, image_id)
    buffered = bytearray()
    try:
        # The body is written as it arrives, a chunk at a time: never a whole image in memory.
        async for piece in request.stream():
            buffered += piece
            if len(buffered) >= CHUNK:
                await run_in_threadpool(upload.write, bytes(buffered))
                buffered.clear()
        if buffered:
            await run_in_threadpool(upload.write, bytes(buffered))
    except BaseException:
        # A client gone mid-upload, or a full disk: the image is queued again, as in Glance.
        await run_in_threadpool(upload.abort)
        raise
    await run_in_threadpool(upload.finish)
    return Response(status_code=204)


def _chunks(fh: BinaryIO) -> Iterator[bytes]:
    with fh:
        yield from iter(lambda: fh.read(CHUNK), b"")


@router.get("/{image_id}/file")
def download_image(image_id: str, images: Store, ctx: Caller) -> Response:
    _authorize(ctx, "download_image", ctx.project_id)
    meta = _visible(images, ctx, image_id)
    if meta.status != "active":
        return Response(status_code=204)  # no data yet, as Glance answers
    # Opened before answering: an image deleted while it streams is still read whole.
    try:
        fh = open(images.data_path(image_id), "rb")  # noqa: SIM115 - closed by _chunks
    except FileNotFoundError:
        return Response(status_code=204)
    headers = {"Content-Length": str(os.fstat(fh.fileno()).st_size)}
    if meta.checksum:
        headers["Content-MD5"] = meta.checksum
    return StreamingResponse(_chunks(fh), headers=headers, media_type="application/octet-stream")
