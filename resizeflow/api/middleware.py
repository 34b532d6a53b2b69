"""The outermost layer of the API: request ids, body limits, project ids in paths, versions.

It runs before the framework, so a body that is too large or a version that
is not honoured is refused before any route or validation sees the request.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from resizeflow import errors
from resizeflow.api import microversion, volume_version
from resizeflow.api.faults import fault_response
from resizeflow.compute.policy import new_request_id

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY = 1024 * 1024  # Nova's osapi_max_request_body_size (114688 KiB); the spec says 1 MiB.
# Top-level collections; any other segment right after /v2.1/ is a project id.
COLLECTIONS = frozenset(
    {
        "servers",
        "flavors",
        "images",
        "os-migrations",
        "os-hypervisors",
        "os-services",
        "os-aggregates",
        "os-resizeflow",
    }
)
_PROJECT_IN_PATH = re.compile(r"^/v2\.1/([^/]+)(/.*)?$")
# The Block Storage API's collections; a segment in their place is a project id.
VOLUME_COLLECTIONS = frozenset({"volumes", "attachments"})
_VOLUME_PROJECT_IN_PATH = re.compile(r"^/volume/v3/([^/]+)(/.*)?$")


def strip_project_id(path: str) -> str:
    """Nova accepts ``/v2.1/{project_id}/servers``; route it as ``/v2.1/servers``."""
    match = _PROJECT_IN_PATH.match(path)
    if match is None or match.group(1) in COLLECTIONS or match.group(2) is None:
        return strip_volume_project_id(path)
    return "/v2.1" + match.group(2)


def strip_volume_project_id(path: str) -> str:
    """Cinder's ``/v3/{project_id}/volumes`` is routed as ``/v3/volumes``."""
    match = _VOLUME_PROJECT_IN_PATH.match(path)
    if match is None or match.group(1) in VOLUME_COLLECTIONS or match.group(2) is None:
        return path
    return "/volume/v3" + match.group(2)


class NovaMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        extra = {"X-OpenStack-Request-Id": request_id, "X-Compute-Request-Id": request_id}
        # The Block Storage API beside the compute API has versions of its own.
        api: Any = volume_version if volume_version.is_volume_path(scope["path"]) else microversion
        try:
            version = api.negotiate(headers)
        except errors.ResizeflowError as exc:
            await fault_response(exc.code, exc.message, extra)(scope, receive, send)
            return
        extra.update(api.response_headers(version))

        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY:
            await _too_large(extra)(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > MAX_BODY:
                await _too_large(extra)(scope, receive, send)
                return

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k.lower().encode("latin-1"), v.encode("latin-1"))
                    for k, v in extra.items()
                    if k.lower().encode("latin-1") not in have
                ]
            await send(message)

        scope = dict(scope)
        scope["path"] = strip_project_id(scope["path"])
        scope.setdefault("state", {})
        scope["state"] = {**scope["state"], "request_id": request_id, "version": version}
        await self.app(scope, replay, send_with_headers)


def _too_large(headers: dict[str, str]) -> Any:
    return fault_response(413, "Request Entity Too Large", headers)


class Mounted:
    """Send ``prefix`` and below to ``app``, everything else to ``other``.

    The image and networking APIs are services of their own beside the
    compute API, each with its own errors and version document at its root.
    """

    def __init__(self, prefix: str, app: ASGIApp, other: ASGIApp) -> None:
        self.prefix = prefix
        self.app = app
        self.other = other

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == self.prefix or path.startswith(self.prefix + "/")):
            # The prefix becomes the root path: routes and links are relative to it.
            # The prefix alone is its root, answered there rather than redirected.
            scope = {
                **scope,
                "root_path": scope.get("root_path", "") + self.prefix,
                "path": path if path != self.prefix else path + "/",
            }
            await self.app(scope, receive, send)
            return
        await self.other(scope, receive, send)
