"""What every route needs: the services, the caller's context, the negotiated version."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import APIKeyHeader

from resizeflow.api import microversion
from resizeflow.api.auth import Authenticator
from resizeflow.api.microversion import Version
from resizeflow.compute.api import ComputeAPI
from resizeflow.compute.flavors import FlavorAdmin
from resizeflow.compute.policy import RequestContext, new_request_id
from resizeflow.compute.queries import Queries
from resizeflow.compute.workflow_admin import WorkflowAdmin

# Query parameters the list routes share.
QueryText = Annotated[str | None, Query(max_length=255)]
QueryLimit = Annotated[int | None, Query(ge=0, le=1000)]

token_header = APIKeyHeader(name="X-Auth-Token", auto_error=False, scheme_name="token")


@dataclass(frozen=True)
class Services:
    compute: ComputeAPI
    queries: Queries
    flavors: FlavorAdmin
    auth: Authenticator
    workflows: WorkflowAdmin


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


def request_id(request: Request) -> str:
    rid: str | None = getattr(request.state, "request_id", None)
    return rid or new_request_id()


def context(
    request: Request,
    svc: Annotated[Services, Depends(services)],
    token: Annotated[str | None, Depends(token_header)],
) -> RequestContext:
    return svc.auth.identify(token).context(request_id(request))


def version(request: Request) -> Version:
    found: Version | None = getattr(request.state, "version", None)
    return found if found is not None else microversion.negotiate(request.headers)


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def set_action(request: Request, action: str) -> None:
    """Name the API action, so an invalid-state error is worded as Nova's API words it."""
    request.state.action = action


Svc = Annotated[Services, Depends(services)]
Ctx = Annotated[RequestContext, Depends(context)]
Ver = Annotated[Version, Depends(version)]
Base = Annotated[str, Depends(base_url)]
