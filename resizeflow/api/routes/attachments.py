"""``/volume/v3/attachments``: Cinder's attachments API (3.27), as Nova drives it.

Reserve a volume for an instance (``POST``), connect it to the host the
instance runs on (``PUT`` with the host's connector; the answer carries the
``connection_info``), mark it attached (``os-complete``, 3.44) and detach it
(``DELETE``, which terminates the host's connection).
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from resizeflow.api import volume_version
from resizeflow.api import volume_views as views
from resizeflow.api.deps import Caller, Svc, Ver
from resizeflow.api.faults import HTTPFault
from resizeflow.api.microversion import Version
from resizeflow.api.routes.volumes import AnyBody, scope
from resizeflow.compute.policy import RequestContext, authorize
from resizeflow.openstack.cinder import AttachmentInfo

router = APIRouter(prefix=views.V3 + "/attachments", tags=["attachments"])


def _needs(version: Version, wanted: tuple[int, int]) -> None:
    # Cinder answers a method that the asked version does not have with 404.
    if not volume_version.at_least(version, wanted):
        raise HTTPFault(404, f"API version {version} is not supported on this method.")


def _uuid(field: str, raw: Any) -> str:
    try:
        return str(uuid.UUID(str(raw)))
    except ValueError:
        raise HTTPFault(
            400, f"Invalid input for field/attribute {field}. Value: {raw}. '{raw}' is not a 'uuid'"
        ) from None


def _connector(body: dict[str, Any]) -> dict[str, Any]:
    connector = body.get("connector")
    if not isinstance(connector, dict) or not isinstance(connector.get("host"), str):
        raise HTTPFault(400, "Invalid input received: a connector with a host is required")
    return connector


def _section(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict) or not isinstance(payload.get("attachment"), dict):
        raise HTTPFault(400, "Missing required element 'attachment' in request body.")
    body: dict[str, Any] = payload["attachment"]
    return body


def _connect(
    svc: Any, caller: RequestContext, att: AttachmentInfo, connector: dict[str, Any]
) -> AttachmentInfo:
    svc.volumes.connect(
        att.id,
        connector["host"],
        mountpoint=connector.get("mountpoint"),
        connector=connector,
        project_id=scope(caller),
    )
    found: AttachmentInfo = svc.volumes.attachment(att.id, scope(caller))
    return found


@router.post("")
def create_attachment(svc: Svc, caller: Caller, version: Ver, payload: AnyBody) -> dict[str, Any]:
    """Reserve a volume for an instance; with a connector, connect it too."""
    _needs(version, volume_version.ATTACHMENTS)
    body = _section(payload)
    volume_id = _uuid("volume_uuid", body.get("volume_uuid"))
    instance_uuid = _uuid("instance_uuid", body.get("instance_uuid"))
    connector = _connector(body) if body.get("connector") is not None else None
    if body.get("mode") not in (None, "rw"):  # 3.54's mode: read-only is not served here
        raise HTTPFault(400, f"Invalid input received: attach mode {body['mode']} is not supported")
    authorize(caller, "volume:attachment_create", caller.project_id)
    att = svc.volumes.reserve(volume_id, instance_uuid, scope(caller))
    if connector is not None:
        att = _connect(svc, caller, att, connector)
    return {"attachment": views.attachment(att)}


@router.get("")
def list_attachments(svc: Svc, caller: Caller, version: Ver) -> dict[str, Any]:
    _needs(version, volume_version.ATTACHMENTS)
    authorize(caller, "volume:attachment_get_all", caller.project_id)
    found = svc.volumes.attachments(caller.project_id)
    return {"attachments": [views.attachment_brief(a) for a in found]}


@router.get("/detail")
def list_attachments_detail(svc: Svc, caller: Caller, version: Ver) -> dict[str, Any]:
    _needs(version, volume_version.ATTACHMENTS)
    authorize(caller, "volume:attachment_get_all", caller.project_id)
    found = svc.volumes.attachments(caller.project_id)
    return {"attachments": [views.attachment(a) for a in found]}


@router.get("/{attachment_id}")
def show_attachment(svc: Svc, caller: Caller, version: Ver, attachment_id: str) -> dict[str, Any]:
    _needs(version, volume_version.ATTACHMENTS)
    authorize(caller, "volume:attachment_get_all", caller.project_id)
    return {"attachment": views.attachment(svc.volumes.attachment(attachment_id, scope(caller)))}


@router.put("/{attachment_id}")
def update_attachment(
    svc: Svc, caller: Caller, version: Ver, attachment_id: str, payload: AnyBody
) -> dict[str, Any]:
    """Connect the volume to the connector's host: the answer holds its connection_info."""
    _needs(version, volume_version.ATTACHMENTS)
    connector = _connector(_section(payload))
    att = svc.volumes.attachment(attachment_id, scope(caller))
    authorize(caller, "volume:attachment_update", caller.project_id)
    return {"attachment": views.attachment(_connect(svc, caller, att, connector))}


@router.post("/{attachment_id}/action", status_code=204)
def attachment_action(
    svc: Svc, caller: Caller, version: Ver, attachment_id: str, payload: AnyBody
) -> Response:
    """``os-complete``: the guest has the volume; it is ``in-use``."""
    _needs(version, volume_version.ATTACHMENT_COMPLETE)
    if not isinstance(payload, dict) or list(payload) != ["os-complete"]:
        raise HTTPFault(400, "There is no such action: " + ", ".join(map(str, payload or {})))
    svc.volumes.attachment(attachment_id, scope(caller))  # 404 first, for another project's
    authorize(caller, "volume:attachment_complete", caller.project_id)
    svc.volumes.complete(attachment_id, scope(caller))
    return Response(status_code=204)


@router.delete("/{attachment_id}")
def delete_attachment(svc: Svc, caller: Caller, version: Ver, attachment_id: str) -> dict[str, Any]:
    """Detach: terminate the connection and drop the attachment; answers the volume's others."""
    _needs(version, volume_version.ATTACHMENTS)
    att = svc.volumes.attachment(attachment_id, scope(caller))
    authorize(caller, "volume:attachment_delete", caller.project_id)
    svc.volumes.detach(att.id)
    left = svc.volumes.attachments(scope(caller), volume_id=att.volume_id)
    return {"attachments": [views.attachment_brief(a) for a in left]}
