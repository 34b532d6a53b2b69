"""Nova's error bodies: ``{"badRequest": {"code": 400, "message": "..."}}``."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import JSONResponse

from resizeflow import errors
from resizeflow.compute.policy import SHOWN_AS

# Nova's wsgi.Fault names; any other code is a computeFault.
FAULT_NAMES = {
    400: "badRequest",
    401: "unauthorized",
    403: "forbidden",
    404: "itemNotFound",
    405: "badMethod",
    409: "conflictingRequest",
    413: "overLimit",
    415: "badMediaType",
    429: "overLimit",
    501: "notImplemented",
    503: "serviceUnavailable",
}


def fault_body(code: int, message: str) -> dict[str, dict[str, int | str]]:
    return {FAULT_NAMES.get(code, "computeFault"): {"code": code, "message": message}}


def fault_response(
    code: int, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(fault_body(code, message), status_code=code, headers=headers)


def api_message(exc: errors.ResizeflowError, action: str | None = None) -> str:
    """The message a Nova API client sees for ``exc``.

    Nova's API rewrites InstanceInvalidState
    (``common.raise_http_conflict_for_instance_invalid_state``) with the name
    of the API action the caller asked for.
    """
    if isinstance(exc, errors.PolicyNotAuthorized):
        # Nova names the rule by its own name (os_compute_api:...).
        rule = str(exc.kwargs.get("action"))
        return f"Policy doesn't allow {SHOWN_AS.get(rule, rule)} to be performed."
    if isinstance(exc, errors.InstanceInvalidState) and action is not None:
        kw = exc.kwargs
        return (
            f"Cannot '{action}' instance {kw.get('instance_uuid')} while it is in "
            f"{kw.get('attr')} {kw.get('state')}"
        )
    return exc.message


class HTTPFault(Exception):
    """An error the API itself decides on, with the code Nova's API uses for it."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
