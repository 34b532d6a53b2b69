"""Admin resources: os-migrations, os-hypervisors, os-services, and the step journal."""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from resizeflow import errors
from resizeflow.api import query, views
from resizeflow.api.deps import Base, Caller, QueryLimit, Svc, Ver, changes_time
from resizeflow.api.faults import HTTPFault
from resizeflow.api.schemas import WorkflowActionBody
from resizeflow.compute.policy import authorize
from resizeflow.compute.queries.infos import HypervisorInfo, MigrationFilters, Page

router = APIRouter(tags=["admin"])
Filter = Annotated[str | None, Query(max_length=255)]
ChangesSince = Annotated[str | None, Query(alias="changes-since", max_length=64)]
ChangesBefore = Annotated[str | None, Query(alias="changes-before", max_length=64)]


_TRUE = frozenset({"1", "t", "true", "on", "y", "yes"})


@router.get("/os-migrations")
def list_migrations(
    request: Request, svc: Svc, caller: Caller, version: Ver, base: Base
) -> dict[str, Any]:
    """Migrations as Nova lists them: filters, then (2.59) pages newest first.

    The query is checked by Nova's schema for the microversion
    (:data:`resizeflow.api.query.MIGRATIONS`): before 2.59 other parameters
    are ignored, from 2.59 they are refused.
    """
    params = query.validated(request, version, query.MIGRATIONS)

    def arg(name: str) -> str | None:
        return query.last(params, name)

    paged = version.at_least(59)
    since = changes_time("changes-since", arg("changes-since")) if paged else None
    before = changes_time("changes-before", arg("changes-before")) if paged else None
    if since is not None and before is not None and before < since:
        raise HTTPFault(
            400, "The value of changes-since must be less than or equal to changes-before."
        )
    hidden = arg("hidden")
    filters = MigrationFilters(
        arg("instance_uuid"),
        arg("status"),
        arg("source_compute"),
        arg("migration_type"),
        marker=arg("marker"),
        user_id=arg("user_id"),
        project_id=arg("project_id"),
        host=arg("host"),
        hidden=None if hidden is None else hidden.strip().lower() in _TRUE,
    )
    limit = query.page_limit(arg("limit")) if paged else None
    page = Page(limit=limit, changes_since=since, changes_before=before)
    found = svc.queries.migrations(caller, filters, page)
    body: dict[str, Any] = {"migrations": [views.migration(m, version) for m in found]}
    if paged and limit and found and len(found) == limit:
        body["migrations_links"] = views.next_links(
            base, "os-migrations", request.query_params, found[-1].uuid
        )
    return body


def _hypervisors(
    svc: Svc,
    caller: Caller,
    version: Ver,
    limit: int | None,
    marker: str | None,
    pattern: str | None,
    rule: str,
) -> list[HypervisorInfo]:
    found = svc.queries.hypervisors(caller, rule)
    if pattern is not None:
        found = [h for h in found if pattern in h.node]
        if not found:
            raise HTTPFault(404, f"No hypervisor matching '{pattern}' could be found.")
    if version.at_least(33) and marker is not None:
        ids = [h.uuid if version.at_least(53) else str(h.id) for h in found]
        if marker not in ids:
            raise HTTPFault(400, f"marker [{marker}] not found")
        found = found[ids.index(marker) + 1 :]
    if version.at_least(33) and limit is not None:
        found = found[:limit]
    return found


def _page_links(
    request: Request, base: Base, version: Ver, found: list[HypervisorInfo], limit: int | None
) -> dict[str, Any]:
    if not version.at_least(33) or limit is None or not found or len(found) < limit:
        return {}
    last = found[-1].uuid if version.at_least(53) else str(found[-1].id)
    return {
        "hypervisors_links": views.next_links(
            base, request.url.path.removeprefix("/v2.1/"), request.query_params, last
        )
    }


HostPattern = Annotated[str | None, Query(max_length=255)]
WithServers = Annotated[str | None, Query(max_length=16)]


@router.get("/os-hypervisors")
def list_hypervisors(
    request: Request,
    svc: Svc,
    caller: Caller,
    version: Ver,
    base: Base,
    limit: QueryLimit = None,
    marker: Filter = None,
    hypervisor_hostname_pattern: HostPattern = None,
    with_servers: WithServers = None,
) -> dict[str, Any]:
    """Compute nodes: id, name, state and status (2.53: with their servers on request)."""
    return _hypervisor_page(
        "compute:hypervisors:list",
        views.hypervisor_brief,
        request,
        svc,
        caller,
        version,
        base,
        limit,
        marker,
        hypervisor_hostname_pattern,
        with_servers,
    )


@router.get("/os-hypervisors/detail")
def list_hypervisors_detail(
    request: Request,
    svc: Svc,
    caller: Caller,
    version: Ver,
    base: Base,
    limit: QueryLimit = None,
    marker: Filter = None,
    hypervisor_hostname_pattern: HostPattern = None,
    with_servers: WithServers = None,
) -> dict[str, Any]:
    """Compute nodes with their capacity and usage (before 2.88)."""
    return _hypervisor_page(
        "compute:hypervisors:detail",
        views.hypervisor,
        request,
        svc,
        caller,
        version,
        base,
        limit,
        marker,
        hypervisor_hostname_pattern,
        with_servers,
    )


def _hypervisor_page(
    rule: str,
    view: Callable[..., dict[str, Any]],
    request: Request,
    svc: Svc,
    caller: Caller,
    version: Ver,
    base: Base,
    limit: int | None,
    marker: str | None,
    pattern: str | None,
    with_servers: str | None,
) -> dict[str, Any]:
    """One page of hypervisors in ``view``'s shape; 2.53 adds the name pattern and servers."""
    new = version.at_least(53)
    found = _hypervisors(svc, caller, version, limit, marker, pattern if new else None, rule)
    servers = new and query.boolean("with_servers", with_servers)
    return {
        "hypervisors": [view(h, version, with_servers=servers) for h in found],
        **_page_links(request, base, version, found, limit),
    }


@router.get("/os-hypervisors/{hypervisor_id}")
def show_hypervisor(
    hypervisor_id: str, svc: Svc, caller: Caller, version: Ver, with_servers: WithServers = None
) -> dict[str, Any]:
    """One compute node (2.53: by uuid)."""
    if version.at_least(53):
        try:
            uuidlib.UUID(hypervisor_id)
        except ValueError:
            raise HTTPFault(400, f"Invalid uuid {hypervisor_id}") from None
    servers = version.at_least(53) and query.boolean("with_servers", with_servers)
    for h in svc.queries.hypervisors(caller, "compute:hypervisors:show"):
        if hypervisor_id == (h.uuid if version.at_least(53) else str(h.id)):
            return {"hypervisor": views.hypervisor(h, version, with_servers=servers, show=True)}
    raise HTTPFault(404, f"Hypervisor with ID '{hypervisor_id}' could not be found.")


@router.get("/os-aggregates")
def list_aggregates(svc: Svc, caller: Caller) -> dict[str, Any]:
    """Host aggregates: resizeflow has none (clients such as OSC still ask)."""
    authorize(caller, "compute:aggregates:index")
    return {"aggregates": []}


@router.get("/os-services")
def list_services(
    svc: Svc, caller: Caller, version: Ver, host: Filter = None, binary: Filter = None
) -> dict[str, Any]:
    """Compute services, up or down by their heartbeats (2.53: ids are uuids)."""
    found = [
        s
        for s in svc.queries.services(caller)
        if (host is None or s.host == host) and (binary is None or s.binary == binary)
    ]
    return {"services": [views.service(s, version) for s in found]}


@router.get("/os-resizeflow/workflows/{migration_id}")
def show_workflow(
    migration_id: Annotated[int, Path(ge=1, le=2**31 - 1)], svc: Svc, caller: Caller, version: Ver
) -> dict[str, Any]:
    """resizeflow's extension: a migration and its step journal (admin)."""
    mig = svc.queries.migration(caller, migration_id)
    steps = svc.queries.workflow(caller, migration_id)
    return {"migration": views.migration(mig, version), "steps": [views.step(s) for s in steps]}


@router.post("/os-resizeflow/workflows/{migration_id}/action", status_code=202)
def workflow_action(
    migration_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    body: WorkflowActionBody,
    svc: Svc,
    caller: Caller,
) -> dict[str, Any]:
    """resizeflow's extension: retry a failed workflow at its failed step, or abort it (admin)."""
    verbs = body.model_fields_set
    if len(verbs) != 1:
        raise errors.ValidationError(
            field="action", value=sorted(verbs), reason="The body must name retry or abort."
        )
    (verb,) = verbs
    do = svc.workflows.retry if verb == "retry" else svc.workflows.abort
    outcome = do(caller, migration_id)
    return {
        "workflow": {
            "migration_id": outcome.migration_id,
            "flow": outcome.flow,
            "step": outcome.step,
            "result": outcome.result,
            "message": outcome.message,
        }
    }
