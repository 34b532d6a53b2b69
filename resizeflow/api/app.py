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
    fault_response,
    field_value,
    jsonschema_reason,
)
from resizeflow.api.middleware import NovaMiddleware
from resizeflow.api.routes import (
    actions,
    admin,
    flavors,
    images,
    instance_actions,
    metrics,
    server_migrations,
    servers,
    versions,
)
from resizeflow.celery_app import make_app
from resizeflow.compute import policy
from resizeflow.compute.api import ComputeAPI
from resizeflow.compute.flavors import FlavorAdmin
from resizeflow.compute.queries import Queries
from resizeflow.compute.workflow_admin import WorkflowAdmin
from resizeflow.conf import Settings
from resizeflow.db.session import Database

log = logging.getLogger(__name__)
PREFIX = "/v2.1"


def validation_message(exc: RequestValidationError, path: str) -> str:
    """Nova's schema error, from the first problem: the field, the value, and why.

    As Nova's validator words it: the field is the innermost key of the path,
    and for a missing or unexpected property it is the object that holds it,
    shown as the value.
    """
    first: dict[str, Any] = exc.errors()[0]
    kind = first.get("type", "")
    raw_loc = tuple(first.get("loc", ()))
    if kind == "json_invalid" or (kind == "model_attributes_type" and raw_loc == ("body",)):
        return "Malformed request body"
    loc = [str(p) for p in raw_loc if p not in ("body", "query", "path", "header")]
    # A union reports the branch it tried (a type name); the field is its parent.
    loc = [p for p in loc if not _union_tag(p)]
    if kind == "missing" and raw_loc[:1] == ("body",) and not loc:
        return "Malformed request body: a JSON object is required"
    if path.endswith("/action") and kind == "extra_forbidden" and len(loc) == 1:
        return f"There is no such action: {loc[0]}"
    leaf = loc[-1] if loc else ""
    value = first.get("input")
    if kind in ("missing", "extra_forbidden"):
        loc = loc[:-1]
        value = _at(exc.body, loc)
    if not loc:
        return jsonschema_reason(kind, first, leaf)  # the body itself: jsonschema's message alone
    # Nova names the innermost part of the path only (``ex.path.pop()``).
    return (
        f"Invalid input for field/attribute {loc[-1]}. Value: {field_value(value)}. "
        f"{jsonschema_reason(kind, first, leaf)}"
    )


_TAGS = frozenset({"str", "int", "bool", "float", "dict", "list", "none", "union"})


def _union_tag(part: str) -> bool:
    """pydantic's names for the branch of a union it tried (not keys of the body)."""
    if ":" in part:
        return False  # a key such as OS-DCF:diskConfig
    return (
        part in _TAGS
        or part[:1].isupper()
        or "[" in part
        or part.startswith(("constrained-", "function-", "json-or-", "lax-or-"))
    )


def _at(body: Any, loc: list[str]) -> Any:
    """The part of the request body at ``loc``, or None where it cannot be followed."""
    for key in loc:
        if isinstance(body, dict):
            body = body.get(key)
        elif isinstance(body, list) and key.isdigit() and int(key) < len(body):
            body = body[int(key)]
        else:
            return None
    return body


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
    for module in (servers, actions, instance_actions, server_migrations, flavors, images, admin):
        app.include_router(module.router, prefix=PREFIX)
    return app


def create_app(
    settings: Settings, database: Database | None = None, celery: Celery | None = None
) -> NovaMiddleware:
    """The API as an ASGI app, its policy file installed for the process."""
    if settings.policy_file:
        policy.configure(policy.load_policy_file(settings.policy_file))
    return NovaMiddleware(create_fastapi(build_services(settings, database, celery)))
