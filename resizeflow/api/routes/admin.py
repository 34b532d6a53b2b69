"""Admin resources: os-migrations, os-hypervisors, os-services, and the step journal."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from resizeflow import errors
from resizeflow.api import views
from resizeflow.api.deps import Ctx, Svc, Ver
from resizeflow.api.schemas import WorkflowActionBody
from resizeflow.compute.policy import authorize
from resizeflow.compute.queries import MigrationFilters

router = APIRouter(tags=["admin"])
Filter = Annotated[str | None, Query(max_length=255)]


@router.get("/os-migrations")
def list_migrations(
    svc: Svc,
    ctx: Ctx,
    version: Ver,
    instance_uuid: Filter = None,
    status: Filter = None,
    source_compute: Filter = None,
    migration_type: Filter = None,
) -> dict[str, Any]:
    """Migrations, newest first, filtered by instance, status, source host and type."""
    filters = MigrationFilters(instance_uuid, status, source_compute, migration_type)
    found = svc.queries.migrations(ctx, filters)
    return {"migrations": [views.migration(m, version) for m in found]}


@router.get("/os-hypervisors")
def list_hypervisors(svc: Svc, ctx: Ctx) -> dict[str, Any]:
    """Compute nodes: id, name, state and status."""
    return {
        "hypervisors": [
            {k: v for k, v in views.hypervisor(h).items() if k in _BRIEF}
            for h in svc.queries.hypervisors(ctx)
        ]
    }


_BRIEF = ("id", "hypervisor_hostname", "state", "status")


@router.get("/os-hypervisors/detail")
def list_hypervisors_detail(svc: Svc, ctx: Ctx) -> dict[str, Any]:
    """Compute nodes with their capacity and usage."""
    return {"hypervisors": [views.hypervisor(h) for h in svc.queries.hypervisors(ctx)]}


@router.get("/os-hypervisors/{hypervisor_id}")
def show_hypervisor(hypervisor_id: str, svc: Svc, ctx: Ctx) -> dict[str, Any]:
    """One compute node with its capacity and usage."""
    for h in svc.queries.hypervisors(ctx):
        if str(h.id) == hypervisor_id:
            return {"hypervisor": views.hypervisor(h)}
    raise errors.HypervisorNotFound(hypervisor=hypervisor_id)


@router.get("/os-aggregates")
def list_aggregates(svc: Svc, ctx: Ctx) -> dict[str, Any]:
    """Host aggregates: resizeflow has none (clients such as OSC still ask)."""
    authorize(ctx, "compute:aggregates:index")
    return {"aggregates": []}


@router.get("/os-services")
def list_services(
    svc: Svc, ctx: Ctx, version: Ver, host: Filter = None, binary: Filter = None
) -> dict[str, Any]:
    """Compute services, up or down by their heartbeats."""
    found = [
        s
        for s in svc.queries.services(ctx)
        if (host is None or s.host == host) and (binary is None or s.binary == binary)
    ]
    return {"services": [views.service(s, version) for s in found]}


@router.get("/os-resizeflow/workflows/{migration_id}")
def show_workflow(
    migration_id: Annotated[int, Path(ge=1, le=2**31 - 1)], svc: Svc, ctx: Ctx, version: Ver
) -> dict[str, Any]:
    """resizeflow's extension: a migration and its step journal (admin)."""
    mig = svc.queries.migration(ctx, migration_id)
    steps = svc.queries.workflow(ctx, migration_id)
    return {"migration": views.migration(mig, version), "steps": [views.step(s) for s in steps]}


@router.post("/os-resizeflow/workflows/{migration_id}/action", status_code=202)
def workflow_action(
    migration_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    body: WorkflowActionBody,
    svc: Svc,
    ctx: Ctx,
) -> dict[str, Any]:
    """resizeflow's extension: retry a failed workflow at its failed step, or abort it (admin)."""
    verbs = body.model_fields_set
    if len(verbs) != 1:
        raise errors.ValidationError(
            field="action", value=sorted(verbs), reason="The body must name retry or abort."
        )
    (verb,) = verbs
    do = svc.workflows.retry if verb == "retry" else svc.workflows.abort
    outcome = do(ctx, migration_id)
    return {
        "workflow": {
            "migration_id": outcome.migration_id,
            "flow": outcome.flow,
            "step": outcome.step,
            "result": outcome.result,
            "message": outcome.message,
        }
    }
