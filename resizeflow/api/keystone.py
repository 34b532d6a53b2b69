"""Keystone in front of the API: keystonemiddleware's ``auth_token``, run per request.

``auth_token`` is a WSGI (webob) middleware and the API is ASGI, so it is not
stacked in front of the app: for each request that needs a caller, a webob
request holding only the ``X-Auth-Token`` header goes through ``auth_token``
to a tiny WSGI app below it, which reads the identity headers ``auth_token``
set (``X-Identity-Status``, ``X-User-Id``, ``X-Project-Id``, ``X-Roles``).
Headers the client sent itself never reach ``auth_token``: only the token is
copied, so a forged ``X-Roles`` counts for nothing. The route dependencies
that call :meth:`KeystoneAuth.identify` are plain functions, which FastAPI
runs in its thread pool, so the validation (an HTTP call to Keystone unless
the token is cached) does not block the event loop.

When ``auth_token`` answers by itself (401 with ``WWW-Authenticate``, or 503
when Keystone cannot be reached) that answer goes back to the client as it
came, as it does in front of Nova, Glance, Cinder and Neutron.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from resizeflow import errors
from resizeflow.api.auth import Identity, Rejected
from resizeflow.conf import Settings

IDENTITY_KEY = "resizeflow.identity"


def middleware_conf(settings: Settings) -> dict[str, Any]:
    """``auth_token``'s options (its ``[keystone_authtoken]`` names) from resizeflow's settings."""
    if not (settings.keystone_url and settings.keystone_username and settings.keystone_password):
        raise errors.ConfigError(
            "RESIZEFLOW_AUTH=keystone needs RESIZEFLOW_KEYSTONE_URL, "
            "RESIZEFLOW_KEYSTONE_USERNAME and RESIZEFLOW_KEYSTONE_PASSWORD"
        )
    conf: dict[str, Any] = {
        "www_authenticate_uri": settings.keystone_url,
        "auth_type": "password",
        "auth_url": settings.keystone_url,
        "username": settings.keystone_username,
        "password": settings.keystone_password,
        "project_name": settings.keystone_project,
        "user_domain_name": settings.keystone_user_domain,
        "project_domain_name": settings.keystone_project_domain,
        "region_name": settings.keystone_region,
        "interface": "public",
        "delay_auth_decision": False,
        "include_service_catalog": False,
        "token_cache_time": settings.keystone_token_cache_time,
        "service_token_roles_required": True,
        "log_name": "keystonemiddleware.auth_token",
    }
    if settings.keystone_cafile:
        conf["cafile"] = settings.keystone_cafile
    if settings.keystone_memcached_servers:
        conf["memcached_servers"] = settings.keystone_memcached_servers
    return conf


def _capture(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Below ``auth_token``: keep the identity it vouched for, answer 204."""
    environ[IDENTITY_KEY] = {
        name: environ.get("HTTP_" + name.upper().replace("-", "_"), "")
        for name in ("X-Identity-Status", "X-User-Id", "X-Project-Id", "X-Roles")
    }
    start_response("204 No Content", [])
    return []


class KeystoneAuth:
    """An :class:`~resizeflow.api.auth.Authenticator` that asks Keystone, through ``auth_token``."""

    def __init__(self, settings: Settings) -> None:
        from keystonemiddleware import auth_token
        from oslo_config import cfg

        # Its own option registry, not oslo.config's global one: nothing is read
        # from files or the command line, every option comes from the settings.
        conf = cfg.ConfigOpts()
        conf([], project="resizeflow", default_config_files=[], default_config_dirs=[])
        self._protocol = auth_token.AuthProtocol(
            _capture, {**middleware_conf(settings), "oslo_config_config": conf}
        )

    def identify(self, token: str | None) -> Identity:
        import webob

        request = webob.Request.blank("/", headers={"X-Auth-Token": token} if token else {})
        response = request.get_response(self._protocol)
        found: dict[str, str] | None = request.environ.get(IDENTITY_KEY)
        if found is None:
            raise Rejected(response.status_int, list(response.headerlist), response.body)
        return identity_of(found)


def identity_of(headers: dict[str, str]) -> Identity:
    """The caller ``auth_token`` confirmed; anything short of a confirmed, project-scoped
    identity is refused."""
    if headers.get("X-Identity-Status") != "Confirmed" or not headers.get("X-User-Id"):
        raise errors.Unauthorized()
    if not headers.get("X-Project-Id"):
        # A domain- or system-scoped token: Nova's project-scoped rules match nothing.
        raise errors.Forbidden("A project-scoped token is required.")
    roles = frozenset(r.strip().lower() for r in headers.get("X-Roles", "").split(",") if r.strip())
    return Identity(headers["X-User-Id"], headers["X-Project-Id"], roles)
