"""Neutron's error bodies: ``{"NeutronError": {"type": ..., "message": ..., "detail": ""}}``.

``type`` is the name of Neutron's exception (``NetworkNotFound``,
``PortInUse``...); errors that are no Neutron exception of their own take
the name of the webob HTTP error Neutron answers with.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import JSONResponse

from resizeflow import errors
from resizeflow.openstack.neutron_errors import NeutronError

HTTP_NAMES = {
    400: "HTTPBadRequest",
    401: "HTTPUnauthorized",
    403: "HTTPForbidden",
    404: "HTTPNotFound",
    405: "HTTPMethodNotAllowed",
    409: "HTTPConflict",
    413: "HTTPRequestEntityTooLarge",
    415: "HTTPUnsupportedMediaType",
    503: "HTTPServiceUnavailable",
}


class ExtensionNotFound(NeutronError):
    code, kind = 404, "ExtensionNotFound"
    msg_fmt = "Extension with alias %(alias)s does not exist"


def fault_response(
    code: int, kind: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = {"NeutronError": {"type": kind, "message": message, "detail": ""}}
    return JSONResponse(body, status_code=code, headers=headers)


def kind_of(exc: errors.ResizeflowError) -> str:
    if isinstance(exc, NeutronError):
        return exc.kind
    return HTTP_NAMES.get(exc.code, "HTTPInternalServerError")
