"""``/servers/{id}/os-instance-actions``: what was done to a server, step by step."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from resizeflow.api import views
from resizeflow.api.deps import Base, Ctx, QueryLimit, Svc, Ver, changes_time
from resizeflow.compute.queries import ActionFilters

router = APIRouter(prefix="/servers", tags=["instance actions"])
Marker = Annotated[str | None, Query(max_length=255)]
ChangesSince = Annotated[str | None, Query(alias="changes-since", max_length=64)]
ChangesBefore = Annotated[str | None, Query(alias="changes-before", max_length=64)]


@router.get("/{server_id}/os-instance-actions")
def list_actions(
    server_id: str,
    request: Request,
    svc: Svc,
    ctx: Ctx,
    version: Ver,
    base: Base,
    limit: QueryLimit = None,
    marker: Marker = None,
    changes_since: ChangesSince = None,
    changes_before: ChangesBefore = None,
) -> dict[str, Any]:
    """The server's actions, newest first; paged and filtered by time from 2.58."""
    paged = version.at_least(58)
    filters = ActionFilters(
        limit=limit if paged else None,
        marker=marker if paged else None,
        changes_since=changes_time("changes-since", changes_since) if paged else None,
        changes_before=(
            changes_time("changes-before", changes_before) if version.at_least(66) else None
        ),
    )
    found = svc.queries.actions(ctx, server_id, filters, deleted_visible=version.at_least(21))
    body: dict[str, Any] = {
        "instanceActions": [views.action(a, version, admin=ctx.is_admin) for a in found]
    }
    if paged and limit is not None and found and len(found) == limit:
        body["links"] = views.next_links(
            base,
            f"servers/{server_id}/os-instance-actions",
            request.query_params,
            found[-1].request_id,
        )
    return body


@router.get("/{server_id}/os-instance-actions/{request_id}")
def show_action(
    server_id: str, request_id: str, svc: Svc, ctx: Ctx, version: Ver
) -> dict[str, Any]:
    """One action with an event per workflow step (before 2.51, events need their policy)."""
    found = svc.queries.action(
        ctx,
        server_id,
        request_id,
        deleted_visible=version.at_least(21),
        events_for_all=version.at_least(51),
    )
    return {"instanceAction": views.action(found, version, admin=ctx.is_admin)}
