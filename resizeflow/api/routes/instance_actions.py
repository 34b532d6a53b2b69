"""``/servers/{id}/os-instance-actions``: what was done to a server, step by step."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from resizeflow.api import views
from resizeflow.api.deps import Ctx, Svc

router = APIRouter(prefix="/servers", tags=["instance actions"])


@router.get("/{server_id}/os-instance-actions")
def list_actions(server_id: str, svc: Svc, ctx: Ctx) -> dict[str, Any]:
    """The server's actions, newest first."""
    found = svc.queries.actions(ctx, server_id)
    return {"instanceActions": [views.action(a, admin=ctx.is_admin) for a in found]}


@router.get("/{server_id}/os-instance-actions/{request_id}")
def show_action(server_id: str, request_id: str, svc: Svc, ctx: Ctx) -> dict[str, Any]:
    """One action, with an event per workflow step (events need the events policy)."""
    found = svc.queries.action(ctx, server_id, request_id)
    return {"instanceAction": views.action(found, admin=ctx.is_admin)}
