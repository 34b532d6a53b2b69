"""``/servers/{id}/migrations`` (2.23): a server's live migrations in progress.

Nova lists here only live migrations that are still running, and shows one
of them by id. resizeflow does no live migrations, so the list is always
empty and no migration can be shown; the refusals are Nova's, in Nova's order:
the server first, then the policy, then the migration.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from resizeflow.api.deps import Caller, Svc, Ver
from resizeflow.api.faults import HTTPFault
from resizeflow.compute.policy import authorize

router = APIRouter(prefix="/servers", tags=["server migrations"])


def _since_2_23(version: Ver) -> None:
    if not version.at_least(23):
        raise HTTPFault(404, "The resource could not be found.")


@router.get("/{server_id}/migrations")
def list_server_migrations(
    server_id: str, svc: Svc, caller: Caller, version: Ver
) -> dict[str, Any]:
    """The server's live migrations in progress: none, as resizeflow does no live migrations."""
    _since_2_23(version)
    server = svc.queries.server(caller, server_id)
    authorize(caller, "compute:servers:migrations:index", server.project_id)
    return {"migrations": []}


@router.get("/{server_id}/migrations/{migration_id}")
def show_server_migration(
    server_id: str, migration_id: str, svc: Svc, caller: Caller, version: Ver
) -> dict[str, Any]:
    """One live migration in progress; every resizeflow migration is a resize, so none."""
    _since_2_23(version)
    server = svc.queries.server(caller, server_id)
    authorize(caller, "compute:servers:migrations:show", server.project_id)
    found = svc.queries.server_migration(server.uuid, migration_id)
    if found is None:
        raise HTTPFault(
            404,
            f"In-progress live migration {migration_id} is not found for server {server_id}.",
        )
    raise HTTPFault(404, f"Migration {migration_id} for server {server_id} is not live-migration.")
