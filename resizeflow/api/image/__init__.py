"""The Image service: Glance v2's subset that clients use, served by ``resizeflow api`` at /image.

It is an ASGI app of its own beside the compute API, as Glance is a service
of its own: its errors are Glance's, not Nova's, and its uploads are
streamed to the image store instead of passing through the compute API's
request-size limit. Its root holds Glance's version document, so clients
(keystoneauth's discovery) find v2 under whatever endpoint the catalog
names. See docs/images.md.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from resizeflow import errors
from resizeflow.api.auth import Authenticator, Rejected, rejected_response
from resizeflow.api.deps import Base
from resizeflow.api.image import routes
from resizeflow.api.image.faults import GlanceFault, fault_response
from resizeflow.api.middleware import ASGIApp, Mounted
from resizeflow.openstack.images import ImageStore

PREFIX = "/image"
# The v2 minor versions whose features this subset has: images and their data (2.0),
# and the "shared" default visibility and community images (2.5).
VERSIONS = ("2.5", "2.4", "2.3", "2.2", "2.1", "2.0")


def version_list(base: str) -> dict[str, Any]:
    return {
        "versions": [
            {
                "id": f"v{v}",
                "status": "CURRENT" if i == 0 else "SUPPORTED",
                "links": [{"rel": "self", "href": f"{base}/v2/"}],
            }
            for i, v in enumerate(VERSIONS)
        ]
    }


def _install_handlers(app: FastAPI) -> None:
    def accept(request: Request) -> str:
        return request.headers.get("accept", "")

    async def on_fault(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GlanceFault)
        return fault_response(exc.code, exc.explanation, accept(request), exc.headers)

    async def on_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, errors.ResizeflowError)
        return fault_response(exc.code, exc.message, accept(request))

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        text = {404: "The resource could not be found."}.get(exc.status_code, str(exc.detail))
        return fault_response(exc.status_code, text, accept(request), exc.headers)

    async def on_validation(request: Request, exc: Exception) -> Response:
        return fault_response(400, "Malformed request.", accept(request))

    app.add_exception_handler(GlanceFault, on_fault)
    app.add_exception_handler(errors.ResizeflowError, on_error)
    app.add_exception_handler(Rejected, rejected_response)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)


def create_image_app(store: ImageStore, auth: Authenticator) -> FastAPI:
    app = FastAPI(title="resizeflow image API", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store = store
    app.state.auth = auth
    _install_handlers(app)

    @app.get("/")
    def versions(base: Base) -> JSONResponse:
        # Glance answers its root with 300 Multiple Choices, /versions with 200.
        return JSONResponse(version_list(base), 300)

    @app.get("/versions")
    def versions_explicit(base: Base) -> dict[str, Any]:
        return version_list(base)

    app.include_router(routes.router)
    return app


def with_image_api(other: ASGIApp, store: ImageStore, auth: Authenticator) -> Mounted:
    """Send ``/image`` and below to the image API, everything else to ``other``."""
    return Mounted(PREFIX, create_image_app(store, auth), other)
