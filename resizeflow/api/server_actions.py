"""Nova's server actions by the key of their body, each mapped onto one service method.

``POST /servers/{id}/action`` names one action as the only key of its body,
as Nova's ``servers.py`` does with one ``@wsgi.action`` handler per key. This
table is where a key becomes a call on the compute service layer, and where
the name Nova's API gives the action in its error messages lives; the service
layer itself knows nothing of HTTP keys.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from resizeflow import errors
from resizeflow.api.faults import HTTPFault, api_message
from resizeflow.compute.api import ComputeAPI
from resizeflow.compute.policy import RequestContext
from resizeflow.states import VmState

# A handler answers with nothing (202 or 204) or with a body (200).
Handler = Callable[[ComputeAPI, RequestContext, str, Any], dict[str, Any] | None]


@dataclass(frozen=True)
class ServerAction:
    key: str  # the body's key, e.g. ``os-stop``
    name: str  # what Nova's API calls it in a 409, e.g. ``stop``
    handler: Handler
    status: int = 202  # Nova answers a confirm with 204, a console log with 200


def _resize(compute: ComputeAPI, caller: RequestContext, uuid: str, body: Any) -> None:
    flavor_ref = body.get("flavorRef") if isinstance(body, dict) else None
    if flavor_ref is None:
        raise errors.ValidationError(
            field="resize", value=body, reason="'flavorRef' is a required property"
        )
    compute.resize(caller, uuid, flavor_ref)


def _migrate(compute: ComputeAPI, caller: RequestContext, uuid: str, body: Any) -> None:
    # The body's host counts from 2.56 (validate_action drops it before then).
    host = body.get("host") if isinstance(body, dict) else None
    try:
        compute.migrate(caller, uuid, host=host)
    except errors.ComputeHostNotFound as exc:
        raise HTTPFault(400, exc.message) from None  # Nova's migrate answers 400, not 404


def _reboot(compute: ComputeAPI, caller: RequestContext, uuid: str, body: Any) -> None:
    compute.reboot(caller, uuid, str(body["type"]))


def _reset_state(compute: ComputeAPI, caller: RequestContext, uuid: str, body: Any) -> None:
    compute.reset_state(caller, uuid, VmState(body["state"]))


# Nova strips the control characters a JSON client could choke on, tabs and
# newlines aside.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f]")


def _console_output(
    compute: ComputeAPI, caller: RequestContext, uuid: str, body: Any
) -> dict[str, Any]:
    length = body.get("length")
    output = compute.console_output(caller, uuid, None if length is None else int(length))
    return {"output": _CONTROL.sub("", output)}


def _confirm_resize(compute: ComputeAPI, caller: RequestContext, uuid: str, body: Any) -> None:
    compute.confirm_resize(caller, uuid)


def _revert_resize(compute: ComputeAPI, caller: RequestContext, uuid: str, body: Any) -> None:
    compute.revert_resize(caller, uuid)


def _stop(compute: ComputeAPI, caller: RequestContext, uuid: str, body: Any) -> None:
    compute.stop(caller, uuid)


def _start(compute: ComputeAPI, caller: RequestContext, uuid: str, body: Any) -> None:
    compute.start(caller, uuid)


def _lock(compute: ComputeAPI, caller: RequestContext, uuid: str, body: Any) -> None:
    reason = body.get("locked_reason") if isinstance(body, dict) else None
    compute.lock(caller, uuid, reason=reason)


def _unlock(compute: ComputeAPI, caller: RequestContext, uuid: str, body: Any) -> None:
    compute.unlock(caller, uuid)


ACTIONS: dict[str, ServerAction] = {
    a.key: a
    for a in (
        ServerAction("resize", "resize", _resize),
        ServerAction("migrate", "migrate", _migrate),
        ServerAction("reboot", "reboot", _reboot),
        ServerAction("os-resetState", "os-resetState", _reset_state),
        ServerAction("os-getConsoleOutput", "os-getConsoleOutput", _console_output, status=200),
        ServerAction("confirmResize", "confirmResize", _confirm_resize, status=204),
        ServerAction("revertResize", "revertResize", _revert_resize),
        ServerAction("os-stop", "stop", _stop),
        ServerAction("os-start", "start", _start),
        ServerAction("lock", "lock", _lock),
        ServerAction("unlock", "unlock", _unlock),
    )
}


def lookup(key: str) -> ServerAction:
    found = ACTIONS.get(key)
    if found is None:
        raise HTTPFault(400, f"There is no such action: {key}")
    return found


def run(
    compute: ComputeAPI, caller: RequestContext, uuid: str, key: str, body: Any
) -> tuple[int, dict[str, Any] | None]:
    """Run the action ``key`` with its body's value: the HTTP status Nova answers
    it with, and the body, for an action that has one."""
    action = lookup(key)
    return action.status, action.handler(compute, caller, uuid, body)


@contextmanager
def worded_as(action: str) -> Iterator[None]:
    """Word a state conflict as Nova's API words it for ``action``.

    Nova's ``common.raise_http_conflict_for_instance_invalid_state`` names the
    action the caller asked for, not the service method that refused it.
    """
    try:
        yield
    except errors.InstanceInvalidState as exc:
        raise HTTPFault(exc.code, api_message(exc, action)) from None
