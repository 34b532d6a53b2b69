"""Query parameters checked as Nova's query schemas check them, for each microversion.

Nova validates a list's query string as a JSON object whose values are lists
(``?limit=1&limit=2`` is ``{"limit": ["1", "2"]}``) against one JSON schema
per range of microversions. Where the schema allows other parameters
(``additionalProperties``), those are dropped unread; where it does not, one
is a 400. A refusal is worded as Nova's validator words it: ``Invalid input
for query parameters limit. Value: -1. '-1' does not match '^[0-9]*$'``, or
jsonschema's own message when it is about the query as a whole.

Each list's schemas live here, as :data:`MIGRATIONS` and
:data:`INSTANCE_ACTIONS`; a route asks :func:`validated` for the parameters
it may read.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jsonschema
from starlette.requests import Request

from resizeflow.api.faults import HTTPFault
from resizeflow.api.microversion import Version

Schema = dict[str, Any]


def many(item: Schema) -> Schema:
    """A parameter that may be given several times."""
    return {"type": "array", "items": item}


def one(item: Schema) -> Schema:
    """A parameter given at most once."""
    return {**many(item), "maxItems": 1}


ANY = many({"type": "string"})
STRING = one({"type": "string"})
TIME = one({"type": "string", "format": "date-time"})
# Nova's non-negative integer: digits only (so "-1" fails on the pattern first).
NON_NEGATIVE = one(
    {"type": ["integer", "string"], "pattern": "^[0-9]*$", "minimum": 0, "minLength": 1}
)


# Nova's boolean parameter: these spellings, and no others.
_TRUE_SPELLINGS = ["True", "TRUE", "true", "1", "ON", "On", "on", "YES", "Yes", "yes"]
_FALSE_SPELLINGS = ["False", "FALSE", "false", "0", "OFF", "Off", "off", "NO", "No", "no"]
BOOLEAN = one(
    {"type": ["boolean", "string"], "enum": [True, *_TRUE_SPELLINGS, False, *_FALSE_SPELLINGS]}
)


def query(properties: dict[str, Schema], *, others: bool) -> Schema:
    return {"type": "object", "properties": properties, "additionalProperties": others}


@dataclass(frozen=True)
class Versioned:
    """A schema for the microversions ``since`` to ``until`` (inclusive)."""

    since: int
    until: int | None
    schema: Schema


def _migrations() -> tuple[Versioned, ...]:
    v20 = {
        "hidden": ANY,
        "host": ANY,
        "instance_uuid": ANY,
        "source_compute": ANY,
        "status": ANY,
        "migration_type": ANY,
    }
    # 2.59: paging by limit and marker, changes-since; nothing else is accepted.
    v259 = {**v20, "limit": NON_NEGATIVE, "marker": STRING, "changes-since": TIME}
    v266 = {**v259, "changes-before": TIME}
    v280 = {**v266, "user_id": STRING, "project_id": STRING}
    return (
        Versioned(1, 58, query(v20, others=True)),
        Versioned(59, 65, query(v259, others=False)),
        Versioned(66, 79, query(v266, others=False)),
        Versioned(80, None, query(v280, others=False)),
    )


def _instance_actions() -> tuple[Versioned, ...]:
    v258 = {"limit": NON_NEGATIVE, "marker": STRING, "changes-since": TIME}
    return (
        Versioned(1, 57, query({}, others=True)),
        Versioned(58, 65, query(v258, others=False)),
        Versioned(66, None, query({**v258, "changes-before": TIME}, others=False)),
    )


MIGRATIONS = _migrations()
INSTANCE_ACTIONS = _instance_actions()

_FORMATS = jsonschema.FormatChecker(formats=())


def _is_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    try:
        dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


_FORMATS.checks("date-time")(_is_time)


def _at_least(validator: Any, bound: Any, instance: Any, schema: Any) -> Any:
    """``minimum``, also for a number given as a string (query values always are)."""
    try:
        number = float(instance)
    except (TypeError, ValueError):
        return
    if number < bound:
        yield jsonschema.ValidationError(f"{instance!r} is less than the minimum of {bound}")


_Validator = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"minimum": _at_least})


def _raise_first(errors: Any) -> None:
    """The first problem jsonschema finds, as Nova's 400."""
    error = next(iter(errors), None)
    if error is None:
        return
    if error.path:
        name = error.path.popleft()
        raise HTTPFault(
            400,
            f"Invalid input for query parameters {name}. Value: {error.instance}. {error.message}",
        )
    raise HTTPFault(400, error.message)


def validated(
    request: Request, version: Version, schemas: Sequence[Versioned]
) -> dict[str, list[str]]:
    """The query's parameters that the schema for ``version`` lets the route read.

    Raises a 400 worded as Nova's for a query the schema refuses.
    """
    params: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        params.setdefault(key, []).append(value)
    schema = next(
        (
            s.schema
            for s in schemas
            if version.at_least(s.since) and (s.until is None or not version.at_least(s.until + 1))
        ),
        None,
    )
    if schema is None:
        return params
    _raise_first(_Validator(schema, format_checker=_FORMATS).iter_errors(params))
    if schema["additionalProperties"] is not False:
        params = {k: v for k, v in params.items() if k in schema["properties"]}
    return params


def boolean(name: str, raw: str | None) -> bool:
    """A boolean parameter (``with_servers``) as Nova's schema checks it; absent is false."""
    if raw is None:
        return False
    schema = query({name: BOOLEAN}, others=True)
    _raise_first(_Validator(schema, format_checker=_FORMATS).iter_errors({name: [raw]}))
    return raw in _TRUE_SPELLINGS


MAX_LIMIT = 1000  # Nova's [api] max_limit


def page_limit(raw: str | None) -> int:
    """Nova's page size: the limit asked for, at most max_limit, and max_limit by default."""
    return MAX_LIMIT if raw is None else min(int(raw), MAX_LIMIT)


def last(params: dict[str, list[str]], name: str) -> str | None:
    """A parameter's value as Nova reads it: the last one given."""
    values = params.get(name)
    return values[-1] if values else None
