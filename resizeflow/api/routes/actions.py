"""``POST /servers/{id}/action``: the resize lifecycle's actions.

resize, migrate, confirmResize, revertResize, os-stop, os-start, reboot,
os-resetState, os-getConsoleOutput, lock and unlock, each
validated by its own body schema for the negotiated microversion and mapped
onto one method of the service layer (see ``resizeflow.api.server_actions``).
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from resizeflow import errors
from resizeflow.api import schemas, server_actions
from resizeflow.api.deps import Caller, Svc, Ver
from resizeflow.api.faults import HTTPFault

router = APIRouter(prefix="/servers", tags=["server actions"])


@router.post(
    "/{server_id}/action",
    status_code=202,
    responses={
        200: {"description": "os-getConsoleOutput: the console log"},
        204: {"description": "confirmResize accepted"},
    },
)
def server_action(
    server_id: str, body: schemas.ActionBody, svc: Svc, caller: Caller, version: Ver
) -> Response:
    """Run one server action: the body's only key names it."""
    raw = body.model_dump(by_alias=True, exclude_unset=True)
    if len(raw) != 1:
        # Nova's action_peek: an action body has exactly one key.
        raise HTTPFault(400, "Malformed request body")
    ((key, value),) = raw.items()
    action = server_actions.lookup(key)
    value = schemas.validate_action(key, value, version)
    try:
        with server_actions.worded_as(action.name):
            status, answer = server_actions.run(svc.compute, caller, server_id, key, value)
    except errors.FlavorNotFound as exc:
        # Nova answers an unknown flavor with the exception's own message.
        raise HTTPFault(400, exc.message) from None
    except errors.NoValidHost as exc:
        raise HTTPFault(400, exc.message) from None
    if answer is not None:
        return JSONResponse(answer, status_code=status)
    return Response(status_code=status)
