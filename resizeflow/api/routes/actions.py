"""``POST /servers/{id}/action``: the resize lifecycle's actions.

resize, confirmResize, revertResize, os-stop, os-start, lock and unlock.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from resizeflow import errors
from resizeflow.api.deps import Ctx, Svc, set_action
from resizeflow.api.faults import HTTPFault
from resizeflow.api.schemas import ActionBody

router = APIRouter(prefix="/servers", tags=["server actions"])

# Body key -> (name Nova's API uses in its errors, status code).
ACTIONS = {
    "resize": ("resize", 202),
    "confirmResize": ("confirmResize", 204),
    "revertResize": ("revertResize", 202),
    "os-stop": ("stop", 202),
    "os-start": ("start", 202),
    "lock": ("lock", 202),
    "unlock": ("unlock", 202),
}


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
    name, code = ACTIONS[key]
    set_action(request, name)
    compute = svc.compute
    if key == "resize":
        assert body.resize is not None  # the schema refuses {"resize": null}
        try:
            compute.resize(ctx, server_id, body.resize.flavorRef)
        except errors.FlavorNotFound:
            raise HTTPFault(400, "Unable to locate requested flavor.") from None
        except errors.NoValidHost as exc:
            raise HTTPFault(400, exc.message) from None
    elif key == "confirmResize":
        compute.confirm_resize(ctx, server_id)
    elif key == "revertResize":
        compute.revert_resize(ctx, server_id)
    elif key == "os-stop":
        compute.stop(ctx, server_id)
    elif key == "os-start":
        compute.start(ctx, server_id)
    elif key == "lock":
        compute.lock(ctx, server_id)
    else:
        compute.unlock(ctx, server_id)
    return Response(status_code=code)
