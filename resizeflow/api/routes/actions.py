"""``POST /servers/{id}/action``: the resize lifecycle's actions.

resize, confirmResize, revertResize, os-stop, os-start, lock and unlock.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from resizeflow import errors
from resizeflow.api.deps import Ctx, Svc, set_action
from resizeflow.api.faults import HTTPFault
from resizeflow.api.schemas import ActionBody
from resizeflow.compute.api import SERVER_ACTIONS

router = APIRouter(prefix="/servers", tags=["server actions"])


def action_name(body: ActionBody) -> str:
    present = [ActionBody.model_fields[f].alias or f for f in body.model_fields_set]
    if len(present) != 1:
        raise errors.ValidationError(
            field="action",
            value=sorted(present),
            reason="The body must name exactly one action.",
        )
    return present[0]


@router.post(
    "/{server_id}/action",
    status_code=202,
    responses={204: {"description": "confirmResize accepted"}},
)
def server_action(
    server_id: str, body: ActionBody, request: Request, svc: Svc, ctx: Ctx
) -> Response:
    """Run one server action."""
    key = action_name(body)
    set_action(request, SERVER_ACTIONS[key])
    try:
        svc.compute.act(ctx, server_id, key, body.resize.flavorRef if body.resize else None)
    except errors.FlavorNotFound:
        raise HTTPFault(400, "Unable to locate requested flavor.") from None
    except errors.NoValidHost as exc:
        raise HTTPFault(400, exc.message) from None
    # Nova answers a confirm with 204 and every other action with 202.
    return Response(status_code=204 if key == "confirmResize" else 202)
