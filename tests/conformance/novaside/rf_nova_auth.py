"""A paste filter for real Nova's API in place of keystonemiddleware's ``authtoken``.

It runs inside the conformance tier's Nova (``.venv-nova``), never in
resizeflow. It takes the ``X-Auth-Token: user:project`` tokens that
resizeflow's noauth takes, at their word, and sets the headers
keystonemiddleware sets for a valid project-scoped token, so that Nova's own
``keystonecontext`` filter builds the request context and Nova's policies run
unchanged. The user ``admin`` has the admin role, as in resizeflow; every user
has ``member`` and ``reader``, the roles Keystone's default role implications
give.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

# Every identity header keystonemiddleware sets (and strips from what a client sent).
_IDENTITY = (
    "IDENTITY_STATUS",
    "SERVICE_IDENTITY_STATUS",
    "DOMAIN_ID",
    "DOMAIN_NAME",
    "PROJECT_ID",
    "PROJECT_NAME",
    "PROJECT_DOMAIN_ID",
    "PROJECT_DOMAIN_NAME",
    "USER_ID",
    "USER_NAME",
    "USER_DOMAIN_ID",
    "USER_DOMAIN_NAME",
    "ROLES",
    "SERVICE_CATALOG",
    "IS_ADMIN_PROJECT",
    "SYSTEM_SCOPE",
    "TENANT_ID",
    "TENANT_NAME",
    "TENANT",
    "USER",
    "ROLE",
)

StartResponse = Callable[..., Any]
App = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def identity(token: str) -> dict[str, str]:
    """The WSGI environ entries for ``user:project``; the project defaults to the user."""
    user, _, project = token.partition(":")
    project = project or user
    roles = "admin,member,reader" if user == "admin" else "member,reader"
    headers = {
        "IDENTITY_STATUS": "Confirmed",
        "USER_ID": user,
        "USER_NAME": user,
        "USER_DOMAIN_ID": "default",
        "USER_DOMAIN_NAME": "Default",
        "PROJECT_ID": project,
        "PROJECT_NAME": project,
        "PROJECT_DOMAIN_ID": "default",
        "PROJECT_DOMAIN_NAME": "Default",
        "ROLES": roles,
        "IS_ADMIN_PROJECT": "True",
        # The names keystonemiddleware still sets for older consumers.
        "TENANT_ID": project,
        "TENANT_NAME": project,
        "TENANT": project,
        "USER": user,
        "ROLE": roles,
    }
    return {f"HTTP_X_{k}": v for k, v in headers.items()}


class TokenFilter:
    def __init__(self, app: App) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        for name in _IDENTITY:
            environ.pop(f"HTTP_X_{name}", None)
        token = environ.get("HTTP_X_AUTH_TOKEN", "")
        if not token or not token.partition(":")[0]:
            # keystonemiddleware's answer to a request without a valid token.
            body = json.dumps(
                {
                    "error": {
                        "code": 401,
                        "title": "Unauthorized",
                        "message": "The request you have made requires authentication.",
                    }
                }
            ).encode()
            start_response(
                "401 Unauthorized",
                [
                    ("Content-Type", "application/json"),
                    ("Content-Length", str(len(body))),
                    ("WWW-Authenticate", 'Keystone uri="http://127.0.0.1"'),
                ],
            )
            return [body]
        environ.update(identity(token))
        return self.app(environ, start_response)


def filter_factory(global_conf: dict[str, Any], **local_conf: Any) -> Callable[[App], App]:
    return TokenFilter
