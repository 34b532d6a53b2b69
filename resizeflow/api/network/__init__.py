"""The Networking API: Neutron v2.0's subset that clients use, served by ``resizeflow api``
at /network.

An ASGI app of its own beside the compute API, as Neutron is a service of its
own: its errors are Neutron's (``{"NeutronError": ...}``), not Nova's. Its
root holds Neutron's version document, so clients (keystoneauth's discovery)
find v2.0 under whatever endpoint the catalog names. It shares the compute
API's services, token header, caller and request id. See docs/networks.md.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from resizeflow import errors
from resizeflow.api.auth import Rejected, rejected_response
from resizeflow.api.deps import Base, ServiceLayer
from resizeflow.api.middleware import ASGIApp, Mounted
from resizeflow.api.network import routes, views
from resizeflow.api.network.faults import HTTP_NAMES, fault_response, kind_of
from resizeflow.compute.policy import new_request_id

PREFIX = "/network"
REQUEST_ID = "X-OpenStack-Request-Id"


def _install_handlers(app: FastAPI) -> None:
    async def on_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, errors.ResizeflowError)
        return fault_response(exc.code, kind_of(exc), exc.message)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        text = {404: "The resource could not be found.", 405: "Method Not Allowed"}.get(
            exc.status_code, str(exc.detail)
        )
        kind = HTTP_NAMES.get(exc.status_code, "HTTPError")
        return fault_response(exc.status_code, kind, text, exc.headers)

    async def on_validation(request: Request, exc: Exception) -> Response:
        return fault_response(400, "HTTPBadRequest", "Malformed request body")

    app.add_exception_handler(errors.ResizeflowError, on_error)
    app.add_exception_handler(Rejected, rejected_response)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)


def create_network_app(services: ServiceLayer) -> FastAPI:
    app = FastAPI(title="resizeflow network API", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.services = services
    _install_handlers(app)

    @app.middleware("http")
    async def request_id(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        # Each answer names its request, as Neutron's request-id middleware does.
        rid = new_request_id()
        request.state.request_id = rid
        response = await call_next(request)
        response.headers[REQUEST_ID] = rid
        return response

    @app.get("/")
    def versions(base: Base) -> dict[str, object]:
        return views.version_list(base)

    app.include_router(routes.router)
    return app


def with_network_api(other: ASGIApp, services: ServiceLayer) -> Mounted:
    """Send ``/network`` and below to the networking API, everything else to ``other``."""
    return Mounted(PREFIX, create_network_app(services), other)
