"""The ASGI application: routers, error handlers, and the services behind them."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from resizeflow import errors
from resizeflow.api import auth, microversion
from resizeflow.api.deps import ServiceLayer
from resizeflow.api.faults import (
    HTTPFault,
    api_message,
    body_loc,
    fault_response,
    invalid_input,
)
from resizeflow.api.image import with_image_api
from resizeflow.api.middleware import ASGIApp, NovaMiddleware
from resizeflow.api.network import with_network_api
from resizeflow.api.routes import (
    actions,
    admin,
    attachments,
    flavors,
    images,
    instance_actions,
    metrics,
    server_migrations,
    servers,
    versions,
    volume_attachments,
    volumes,
)
from resizeflow.celery_app import make_app
from resizeflow.compute import policy
from resizeflow.compute.api import ComputeAPI
from resizeflow.compute.flavors import FlavorAdmin
from resizeflow.compute.queries import Queries
from resizeflow.compute.workflow_admin import WorkflowAdmin
from resizeflow.conf import Settings
from resizeflow.db.session import Database
from resizeflow.openstack.cinder import volume_service
from resizeflow.openstack.images import ImageStore
from resizeflow.openstack.neutron import NetworkService

log = logging.getLogger(__name__)
PREFIX = "/v2.1"


def validation_message(exc: RequestValidationError, path: str) -> str:
    """Nova's schema error for a request, from its first problem (see ``invalid_input``)."""
    first: dict[str, Any] = exc.errors()[0]
    kind = first.get("type", "")
    raw_loc = tuple(first.get("loc", ()))
    if kind == "json_invalid" or (kind == "model_attributes_type" and raw_loc == ("body",)):
        return "Malformed request body"
    loc = body_loc(p for p in raw_loc if p not in ("body", "query", "path", "header"))
    if kind == "missing" and raw_loc[:1] == ("body",) and not loc:
        return "Malformed request body: a JSON object is required"
    if path.endswith("/action") and kind == "extra_forbidden" and len(loc) == 1:
        return f"There is no such action: {loc[0]}"
    return invalid_input(first, exc.body, loc)


def install_handlers(app: FastAPI) -> None:
    async def on_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, errors.ResizeflowError)
        if exc.code >= 500:
            log.error("%s %s failed: %s", request.method, request.url.path, exc.message)
        return fault_response(exc.code, api_message(exc))

    async def on_fault(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPFault)
        return fault_response(exc.code, exc.message)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return fault_response(400, validation_message(exc, request.url.path))

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        message = {404: "The resource could not be found.", 405: "Method Not Allowed"}.get(
            exc.status_code, str(exc.detail)
        )
        return fault_response(exc.status_code, message, exc.headers)

    async def on_crash(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error in %s %s", request.method, request.url.path)
        return fault_response(
            500,
            "Unexpected API Error. Please report this at your cloud's operators and attach "
            f"the API log if possible.\n{type(exc).__name__}",
        )

    app.add_exception_handler(errors.ResizeflowError, on_error)
    app.add_exception_handler(auth.Rejected, auth.rejected_response)
    app.add_exception_handler(HTTPFault, on_fault)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_crash)


def build_services(
    settings: Settings, database: Database | None = None, celery: Celery | None = None
) -> ServiceLayer:
    database = database or Database(settings.db_url)
    celery = celery or make_app(settings)
    return ServiceLayer(
        compute=ComputeAPI(settings, database, celery),
        queries=Queries(settings, database),
        flavors=FlavorAdmin(database),
        auth=auth.authenticator(settings),
        workflows=WorkflowAdmin(settings, database, celery),
        volumes=volume_service(settings, database, celery),
        network=NetworkService(database, settings.fixed_range),
    )


def create_fastapi(services: ServiceLayer) -> FastAPI:
    app = FastAPI(
        title="resizeflow compute API",
        version=microversion.fmt(microversion.MAX_VERSION),
        description="OpenStack Compute API v2.1 for the resize lifecycle.",
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.services = services
    install_handlers(app)
    app.include_router(versions.router)
    app.include_router(metrics.router)
    for module in (
        servers,
        actions,
        instance_actions,
        server_migrations,
        volume_attachments,
        flavors,
        images,
        admin,
    ):
        app.include_router(module.router, prefix=PREFIX)
    # The Block Storage v3 API, under /volume (its own version document at /volume/).
    app.include_router(volumes.router)
    app.include_router(attachments.router)
    return app


def create_app(
    settings: Settings, database: Database | None = None, celery: Celery | None = None
) -> ASGIApp:
    """The API as an ASGI app, its policy file installed for the process: the compute
    API, the image API at /image and the networking API at /network beside it."""
    if settings.policy_file:
        policy.configure(policy.load_policy_file(settings.policy_file))
    services = build_services(settings, database, celery)
    compute = NovaMiddleware(create_fastapi(services))
    images = with_image_api(compute, ImageStore(settings.images_dir()), services.auth)
    return with_network_api(images, services)
