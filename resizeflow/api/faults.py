"""Nova's error bodies: ``{"badRequest": {"code": 400, "message": "..."}}``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

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


def field_value(value: Any) -> str:
    """The ``Value:`` of Nova's message: ``str()`` of the value (a string without quotes)."""
    return value if isinstance(value, str) else shown_value(value)


def shown_value(value: Any) -> str:
    """A value as jsonschema's reasons show it: Python's repr."""
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


# pydantic's type errors, as the JSON Schema type jsonschema names in Nova's messages.
_JSON_TYPE = {
    "string_type": "string",
    "str_type": "string",
    "int_type": "integer",
    "int_parsing": "integer",
    "bool_type": "boolean",
    "bool_parsing": "boolean",
    "dict_type": "object",
    "model_type": "object",
    "model_attributes_type": "object",
    "list_type": "array",
}


def jsonschema_reason(kind: str, first: dict[str, Any], leaf: str) -> str:
    """jsonschema's wording for the common failures, which Nova's messages carry."""
    value = first.get("input")
    constraint = first.get("ctx") or {}
    if kind == "missing":
        return f"'{leaf}' is a required property"
    if kind == "extra_forbidden":
        return f"Additional properties are not allowed ('{leaf}' was unexpected)"
    if kind == "string_too_long":
        empty = constraint.get("max_length") == 0
        return f"{shown_value(value)} {'is expected to be empty' if empty else 'is too long'}"
    if kind == "string_too_short":
        one = constraint.get("min_length") == 1
        return f"{shown_value(value)} {'should be non-empty' if one else 'is too short'}"
    if kind in _JSON_TYPE:
        return f"{shown_value(value)} is not of type '{_JSON_TYPE[kind]}'"
    if kind == "literal_error":
        # pydantic lists the choices as "'a', 'b' or 'c'"; jsonschema as a list.
        choices = str(constraint.get("expected", "")).replace(" or ", ", ")
        return f"{shown_value(value)} is not one of [{choices}]"
    if kind in ("greater_than_equal", "greater_than"):
        least = constraint.get("ge", constraint.get("gt"))
        return f"{shown_value(value)} is less than the minimum of {least}"
    if kind in ("less_than_equal", "less_than"):
        most = constraint.get("le", constraint.get("lt"))
        return f"{shown_value(value)} is greater than the maximum of {most}"
    if kind == "string_pattern_mismatch":
        return f"{shown_value(value)} does not match '{constraint.get('pattern', '')}'"
    return str(first.get("msg", "Invalid value")).removeprefix("Value error, ")


def invalid_input(first: Mapping[str, Any], body: Any, loc: Sequence[str]) -> str:
    """Nova's validator message for ``body`` failing its schema at ``loc`` (pydantic's
    ``first`` error, with ``loc`` the keys of the body that lead to it).

    As Nova's validator words it: the field is the innermost key of the path
    (``ex.path.pop()``), and for a missing or unexpected property it is the
    object that holds it, shown as the value; a value is shown as ``str()``
    shows it. At the body itself, jsonschema's reason alone.
    """
    kind = str(first.get("type", ""))
    leaf = loc[-1] if loc else ""
    value = first.get("input")
    if kind in ("missing", "extra_forbidden"):
        loc = loc[:-1]
        value = body_at(body, loc)
    if not loc:
        return jsonschema_reason(kind, dict(first), leaf)
    return (
        f"Invalid input for field/attribute {loc[-1]}. Value: {field_value(value)}. "
        f"{jsonschema_reason(kind, dict(first), leaf)}"
    )


_TAGS = frozenset({"str", "int", "bool", "float", "dict", "list", "none", "union"})


def body_loc(raw: Iterable[Any]) -> list[str]:
    """The keys of the body in a pydantic error's ``loc``, without the names pydantic
    gives the branch of a union it tried (a type name: the field is its parent)."""
    return [p for p in (str(r) for r in raw) if not _union_tag(p)]


def _union_tag(part: str) -> bool:
    if ":" in part:
        return False  # a key such as OS-DCF:diskConfig
    return (
        part in _TAGS
        or part[:1].isupper()
        or "[" in part
        or part.startswith(("constrained-", "function-", "json-or-", "lax-or-"))
    )


def body_at(body: Any, loc: Sequence[str]) -> Any:
    """The part of the request body at ``loc``, or None where it cannot be followed."""
    for key in loc:
        if isinstance(body, dict):
            body = body.get(key)
        elif isinstance(body, list) and key.isdigit() and int(key) < len(body):
            body = body[int(key)]
        else:
            return None
    return body
