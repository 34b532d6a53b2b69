"""``/servers/{id}/os-volume_attachments``: a server's volumes, attached and detached.

As Nova's API shows them at the negotiated microversion: the attachment's
``id`` is the volume id until 2.88; ``tag`` from 2.70; ``delete_on_termination``
from 2.79; ``attachment_id`` and ``bdm_uuid`` from 2.89 (in place of ``id``,
except in the answer to an attach).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from resizeflow.api import schemas
from resizeflow.api.deps import Caller, Svc, Ver
from resizeflow.api.microversion import Version
from resizeflow.api.server_actions import worded_as
from resizeflow.compute.volumes import AttachmentView, BlockDevice

router = APIRouter(prefix="/servers", tags=["volume attachments"])


def attachment_view(att: AttachmentView, version: Version) -> dict[str, Any]:
    body: dict[str, Any] = {} if version.at_least(89) else {"id": att.volume_id}
    body.update({"volumeId": att.volume_id, "serverId": att.server_id})
    if att.device:
        body["device"] = att.device
    if version.at_least(70):
        body["tag"] = att.tag
    if version.at_least(79):
        body["delete_on_termination"] = att.delete_on_termination
    if version.at_least(89):
        body["attachment_id"] = att.attachment_id
        body["bdm_uuid"] = att.bdm_uuid
    return body


@router.get("/{server_id}/os-volume_attachments")
def list_volume_attachments(
    server_id: str, svc: Svc, caller: Caller, version: Ver
) -> dict[str, Any]:
    """The server's volume attachments, oldest first."""
    found = svc.compute.volume_attachments(caller, server_id)
    return {"volumeAttachments": [attachment_view(a, version) for a in found]}


@router.get("/{server_id}/os-volume_attachments/{volume_id}")
def show_volume_attachment(
    server_id: str, volume_id: str, svc: Svc, caller: Caller, version: Ver
) -> dict[str, Any]:
    """One of the server's volume attachments, by its volume id."""
    found = svc.compute.volume_attachment(caller, server_id, volume_id)
    return {"volumeAttachment": attachment_view(found, version)}


@router.post("/{server_id}/os-volume_attachments")
def attach_volume(
    server_id: str, body: schemas.VolumeAttachmentBody, svc: Svc, caller: Caller, version: Ver
) -> dict[str, Any]:
    """Attach a volume: it is reserved now, and attached by the server's host (200, as Nova)."""
    schemas.check_volume_attach(body, version)
    att = body.volumeAttachment
    with worded_as("attach_volume"):
        done = svc.compute.attach_volume(
            caller,
            server_id,
            BlockDevice(
                volume_id=att.volumeId,
                device=att.device,
                tag=att.tag,
                delete_on_termination=bool(att.delete_on_termination),
            ),
        )
    # Nova answers an attach with the volume id as the attachment's id at every version.
    shown: dict[str, Any] = {
        "id": done.volume_id,
        "serverId": done.server_id,
        "volumeId": done.volume_id,
        "device": done.device,
    }
    if version.at_least(70):
        shown["tag"] = done.tag
    if version.at_least(79):
        shown["delete_on_termination"] = done.delete_on_termination
    return {"volumeAttachment": shown}


@router.delete("/{server_id}/os-volume_attachments/{volume_id}", status_code=202)
def detach_volume(server_id: str, volume_id: str, svc: Svc, caller: Caller) -> Response:
    """Detach a volume: the server's host takes it out of the guest, then it is ``available``."""
    with worded_as("detach_volume"):
        svc.compute.detach_volume(caller, server_id, volume_id)
    return Response(status_code=202)
