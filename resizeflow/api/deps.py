"""What every route needs: the services, the caller's context, the negotiated version."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import APIKeyHeader

from resizeflow.api import microversion
from resizeflow.api.auth import Authenticator
from resizeflow.api.faults import HTTPFault
from resizeflow.api.microversion import Version
from resizeflow.compute.api import ComputeAPI
from resizeflow.compute.flavors import FlavorAdmin
from resizeflow.compute.policy import RequestContext, new_request_id
from resizeflow.compute.queries import Queries
from resizeflow.compute.workflow_admin import WorkflowAdmin
from resizeflow.openstack.cinder import VolumeService
from resizeflow.openstack.neutron import NetworkService

# Query parameters the list routes share.
QueryText = Annotated[str | None, Query(max_length=255)]
QueryLimit = Annotated[int | None, Query(ge=0, le=1000)]

token_header = APIKeyHeader(name="X-Auth-Token", auto_error=False, scheme_name="token")


@dataclass(frozen=True)
class ServiceLayer:
    """The compute service layer's parts the routes call, built once per API process."""

    compute: ComputeAPI
    queries: Queries
    flavors: FlavorAdmin
    auth: Authenticator
    workflows: WorkflowAdmin
    volumes: VolumeService
    network: NetworkService


def services(request: Request) -> ServiceLayer:
    found: ServiceLayer = request.app.state.services
    return found


def request_id(request: Request) -> str:
    rid: str | None = getattr(request.state, "request_id", None)
    return rid or new_request_id()


def caller(
    request: Request,
    svc: Annotated[ServiceLayer, Depends(services)],
    token: Annotated[str | None, Depends(token_header)],
) -> RequestContext:
    return svc.auth.identify(token).context(request_id(request))


def version(request: Request) -> Version:
    found: Version | None = getattr(request.state, "version", None)
    return found if found is not None else microversion.negotiate(request.headers)


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def changes_time(name: str, raw: str | None) -> dt.datetime | None:
    """A ``changes-since``/``changes-before`` value: ISO 8601, compared in naive UTC."""
    if raw is None:
        return None
    try:
        when = dt.datetime.fromisoformat(raw.strip())
    except ValueError:
        raise HTTPFault(
            400,
            f"Invalid input for query parameters {name}. Value: {raw}. "
            f"'{raw}' is not a 'date-time'",
        ) from None
    if when.tzinfo is not None:
        when = when.astimezone(dt.UTC).replace(tzinfo=None)
    return when


def is_true(name: str, raw: str | None) -> bool:
    """A boolean query parameter, as Nova's ``strutils.bool_from_string(strict=True)`` reads it."""
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in ("1", "t", "true", "on", "y", "yes"):
        return True
    if value in ("0", "f", "false", "off", "n", "no"):
        return False
    raise HTTPFault(
        400,
        f"Invalid input for query parameters {name}. Value: {raw}. "
        f"'{raw}' is not one of ['1', 't', 'true', 'on', 'y', 'yes', '0', 'f', 'false', "
        "'off', 'n', 'no']",
    )


Svc = Annotated[ServiceLayer, Depends(services)]
Caller = Annotated[RequestContext, Depends(caller)]
Ver = Annotated[Version, Depends(version)]
Base = Annotated[str, Depends(base_url)]
