"""``/servers/{id}/os-instance-actions``: what was done to a server, step by step."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from resizeflow import errors
from resizeflow.api import query, views
from resizeflow.api.deps import Base, Caller, Svc, Ver, changes_time
from resizeflow.api.faults import HTTPFault
from resizeflow.compute.queries.infos import ActionFilters, MarkerNotFound

router = APIRouter(prefix="/servers", tags=["instance actions"])


@router.get("/{server_id}/os-instance-actions")
def list_actions(
    server_id: str, request: Request, svc: Svc, caller: Caller, version: Ver, base: Base
) -> dict[str, Any]:
    """The server's actions, newest first; paged and filtered by time from 2.58.

    The query is checked by Nova's schema for the microversion
    (:data:`resizeflow.api.query.INSTANCE_ACTIONS`).
    """
    params = query.validated(request, version, query.INSTANCE_ACTIONS)
    paged = version.at_least(58)
    raw_limit = query.last(params, "limit")
    limit = query.page_limit(raw_limit) if paged else None
    filters = ActionFilters(
        limit=limit,
        marker=query.last(params, "marker") if paged else None,
        changes_since=changes_time("changes-since", query.last(params, "changes-since")),
        changes_before=changes_time("changes-before", query.last(params, "changes-before")),
    )
    try:
        found = svc.queries.actions(
            caller, server_id, filters, deleted_visible=version.at_least(21)
        )
    except MarkerNotFound:
        # NOTE: Nova's message names no marker: its database layer puts the
        # (missing) action it looked up in the marker's place, so it says None.
        raise HTTPFault(400, "Marker None could not be found.") from None
    body: dict[str, Any] = {
        "instanceActions": [views.action(a, version, admin=caller.is_admin) for a in found]
    }
    if paged and limit and found and len(found) == limit:
        body["links"] = views.next_links(
            base,
            f"servers/{server_id}/os-instance-actions",
            request.query_params,
            found[-1].request_id,
        )
    return body


@router.get("/{server_id}/os-instance-actions/{request_id}")
def show_action(
    server_id: str, request_id: str, svc: Svc, caller: Caller, version: Ver
) -> dict[str, Any]:
    """One action with an event per workflow step (before 2.51, events need their policy)."""
    try:
        found = svc.queries.action(
            caller,
            server_id,
            request_id,
            deleted_visible=version.at_least(21),
            events_for_all=version.at_least(51),
        )
    except errors.InstanceActionNotFound:
        raise HTTPFault(404, f"Action {request_id} not found") from None
    return {"instanceAction": views.action(found, version, admin=caller.is_admin)}
