"""Where CLI commands go: the service layer in this process, or the REST API at ``--url``.

Both backends answer with the same Nova-shaped dicts, built by the API's own
views, so commands render one shape whichever way they were served.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import click
import httpx

from resizeflow import errors
from resizeflow.api import server_actions, views
from resizeflow.api.auth import NoAuth
from resizeflow.api.faults import api_message
from resizeflow.api.microversion import MAX_VERSION, Version, fmt
from resizeflow.compute.policy import RequestContext, allowed, new_request_id
from resizeflow.compute.queries.infos import MigrationFilters
from resizeflow.conf import Settings
from resizeflow.openstack.base import PortRequest


class Gone(click.ClickException):
    """The server no longer exists (what a delete waits for)."""


class Backend(Protocol):
    def create(
        self, name: str, flavor: str, host: str | None, networks: str, metadata: dict[str, str]
    ) -> tuple[str, str]: ...

    def servers(self, all_projects: bool) -> list[dict[str, Any]]: ...

    def server(self, server_id: str) -> dict[str, Any]: ...

    def action(self, server_id: str, key: str, value: Any) -> str: ...

    def delete(self, server_id: str) -> str: ...

    def console(self, server_id: str, lines: int | None) -> str: ...

    def flavors(self) -> list[dict[str, Any]]: ...

    def migrations(self, **filters: str | None) -> list[dict[str, Any]]: ...

    def workflow(self, migration_id: int) -> dict[str, Any]: ...

    def workflow_action(self, migration_id: int, verb: str) -> dict[str, Any]: ...

    def close(self) -> None: ...


class LocalBackend:
    """The compute service layer, called in this process."""

    def __init__(self, settings: Settings, token: str) -> None:
        from resizeflow.api.app import build_services

        self.identity = NoAuth().identify(token)
        self.svc = build_services(settings)
        self.version = Version(*MAX_VERSION)

    def _caller(self) -> RequestContext:
        return self.identity.context(new_request_id())

    @contextmanager
    def _calling(self, action: str | None = None) -> Iterator[None]:
        try:
            yield
        except errors.ResizeflowError as exc:
            raise click.ClickException(api_message(exc, action)) from None

    def create(
        self, name: str, flavor: str, host: str | None, networks: str, metadata: dict[str, str]
    ) -> tuple[str, str]:
        caller = self._caller()
        nets = () if networks == "none" else (PortRequest(),)
        with self._calling("create"):
            uuid = self.svc.compute.create(
                caller, name=name, flavor_ref=flavor, host=host, networks=nets, metadata=metadata
            )
        return uuid, caller.request_id

    def servers(self, all_projects: bool) -> list[dict[str, Any]]:
        caller = self._caller()
        with self._calling():
            found = self.svc.queries.servers(caller, all_projects=all_projects)
        admin = allowed(caller, "compute:servers:show:extended_attributes")
        return [views.server(s, self.version, "", admin=admin) for s in found]

    def server(self, server_id: str) -> dict[str, Any]:
        caller = self._caller()
        try:
            info = self.svc.queries.server(caller, server_id)
        except errors.InstanceNotFound as exc:
            raise Gone(exc.message) from None
        except errors.ResizeflowError as exc:
            raise click.ClickException(exc.message) from None
        admin = allowed(caller, "compute:servers:show:extended_attributes", info.project_id)
        return views.server(info, self.version, "", admin=admin)

    def action(self, server_id: str, key: str, value: Any) -> str:
        caller = self._caller()
        action = server_actions.lookup(key)
        with self._calling(action.name):
            server_actions.run(self.svc.compute, caller, server_id, key, value)
        return caller.request_id

    def delete(self, server_id: str) -> str:
        caller = self._caller()
        with self._calling("delete"):
            self.svc.compute.delete(caller, server_id)
        return caller.request_id

    def console(self, server_id: str, lines: int | None) -> str:
        with self._calling("os-getConsoleOutput"):
            return self.svc.compute.console_output(self._caller(), server_id, lines)

    def flavors(self) -> list[dict[str, Any]]:
        return [views.flavor(f, "", self.version) for f in self.svc.queries.flavors()]

    def migrations(self, **filters: str | None) -> list[dict[str, Any]]:
        with self._calling():
            found = self.svc.queries.migrations(
                self._caller(),
                MigrationFilters(**filters),  # type: ignore[arg-type]
            )
        return [views.migration(m, self.version) for m in found]

    def workflow(self, migration_id: int) -> dict[str, Any]:
        caller = self._caller()
        with self._calling():
            mig = self.svc.queries.migration(caller, migration_id)
            steps = self.svc.queries.workflow(caller, migration_id)
        return {
            "migration": views.migration(mig, self.version),
            "steps": [views.step(s) for s in steps],
        }

    def workflow_action(self, migration_id: int, verb: str) -> dict[str, Any]:
        caller = self._caller()
        with self._calling():
            do = self.svc.workflows.retry if verb == "retry" else self.svc.workflows.abort
            outcome = do(caller, migration_id)
        return {"result": outcome.result, "message": outcome.message, "step": outcome.step}

    def close(self) -> None:
        self.svc.compute.db.dispose()


class HttpBackend:
    """The REST API at ``url`` (its ``/v2.1`` endpoint)."""

    def __init__(self, url: str, token: str, timeout: float = 30.0) -> None:
        base = url.rstrip("/")
        if not base.endswith("/v2.1"):
            base += "/v2.1"
        self.client = httpx.Client(
            base_url=base,
            timeout=timeout,
            headers={
                "X-Auth-Token": token,
                "OpenStack-API-Version": f"compute {fmt(MAX_VERSION)}",
                "Accept": "application/json",
            },
        )

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            resp = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise click.ClickException(f"cannot reach {self.client.base_url}: {exc}") from None
        if resp.status_code >= 400:
            message = _fault_message(resp)
            if resp.status_code == 404 and path.startswith("/servers/"):
                raise Gone(message)
            raise click.ClickException(message)
        return resp

    def create(
        self, name: str, flavor: str, host: str | None, networks: str, metadata: dict[str, str]
    ) -> tuple[str, str]:
        server: dict[str, Any] = {
            "name": name,
            "flavorRef": flavor,
            "networks": networks,
            "metadata": metadata,
        }
        if host:
            server["availability_zone"] = f"nova:{host}"
        resp = self._call("POST", "/servers", json={"server": server})
        return str(resp.json()["server"]["id"]), resp.headers.get("x-openstack-request-id", "")

    def servers(self, all_projects: bool) -> list[dict[str, Any]]:
        params = {"all_tenants": "1"} if all_projects else {}
        found: list[dict[str, Any]] = self._call("GET", "/servers/detail", params=params).json()[
            "servers"
        ]
        return found

    def server(self, server_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self._call("GET", f"/servers/{server_id}").json()["server"]
        return found

    def action(self, server_id: str, key: str, value: Any) -> str:
        resp = self._call("POST", f"/servers/{server_id}/action", json={key: value})
        return str(resp.headers.get("x-openstack-request-id", ""))

    def delete(self, server_id: str) -> str:
        resp = self._call("DELETE", f"/servers/{server_id}")
        return str(resp.headers.get("x-openstack-request-id", ""))

    def console(self, server_id: str, lines: int | None) -> str:
        body = {"os-getConsoleOutput": {} if lines is None else {"length": lines}}
        resp = self._call("POST", f"/servers/{server_id}/action", json=body)
        return str(resp.json()["output"])

    def flavors(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._call("GET", "/flavors/detail").json()["flavors"]
        return found

    def migrations(self, **filters: str | None) -> list[dict[str, Any]]:
        params = {k: v for k, v in filters.items() if v is not None}
        found: list[dict[str, Any]] = self._call("GET", "/os-migrations", params=params).json()[
            "migrations"
        ]
        return found

    def workflow(self, migration_id: int) -> dict[str, Any]:
        found: dict[str, Any] = self._call("GET", f"/os-resizeflow/workflows/{migration_id}").json()
        return found

    def workflow_action(self, migration_id: int, verb: str) -> dict[str, Any]:
        path = f"/os-resizeflow/workflows/{migration_id}/action"
        found: dict[str, Any] = self._call("POST", path, json={verb: None}).json()["workflow"]
        return found

    def close(self) -> None:
        self.client.close()


def _fault_message(resp: httpx.Response) -> str:
    try:
        body = resp.json()
        (fault,) = body.values()
        return str(fault["message"])
    except (ValueError, TypeError, KeyError, AttributeError):
        return f"HTTP {resp.status_code}: {resp.text[:200]}"
