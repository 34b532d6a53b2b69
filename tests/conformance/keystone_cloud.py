"""resizeflow behind real Keystone: projects, personas, a stack with ``RESIZEFLOW_AUTH=keystone``.

One Keystone (:class:`~tests.conformance.keystone.KeystoneDeployment`) and one
resizeflow stack (one compute host, SQLite, Redis) serve both Keystone test
modules. Keystone gets, through its own API as its bootstrapped admin: a
``service`` project with a ``resizeflow`` user holding the ``service`` role
(the user keystonemiddleware validates tokens as), two projects ``alpha`` and
``beta``, and users with the ``admin``, ``member`` and ``reader`` roles in
``alpha`` and a ``member`` in ``beta``. Every API resizeflow serves is in the
catalog: compute, block-storage (``volumev3``), image and network.

Each persona's token is fetched once; every request and answer the tests make
is kept, so a test can look for secrets in all of them. Each project holds a
server, a volume, an image and a network of its own, made by its member.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conformance.keystone import REGION, KeystoneDeployment, require_keystone
from tests.support.stack import REDIS_URL, Stack, build_stack, destroy_stack, require, wait_for

LOGS = Path(os.environ.get("RESIZEFLOW_CONFORMANCE_REPORT", "var/conformance/report.txt")).parent
SERVICE_USER = "resizeflow"
# Persona name -> (project, role).
PERSONAS = {
    "admin": ("alpha", "admin"),
    "member": ("alpha", "member"),
    "reader": ("alpha", "reader"),
    "beta-member": ("beta", "member"),
}


@dataclass
class Persona:
    name: str
    user_id: str
    project_id: str
    password: str
    token: str


@dataclass
class KeystoneCloud:
    keystone: KeystoneDeployment
    rf: Stack
    service_password: str
    projects: dict[str, str]  # name -> id
    personas: dict[str, Persona]
    resources: dict[str, dict[str, str]] = field(default_factory=dict)  # project -> kind -> id
    exchanges: list[httpx.Response] = field(default_factory=list)

    @property
    def base(self) -> str:
        return self.rf.local.api_url

    def client(self, token: str | None, **headers: str) -> httpx.Client:
        """An HTTP client to resizeflow's API sending ``token``; every answer is kept."""
        sent = {"X-Auth-Token": token} if token else {}
        # 2.37: a server may be created with "networks": "none".
        return httpx.Client(
            base_url=self.base,
            headers={"X-OpenStack-Nova-API-Version": "2.37", **sent, **headers},
            timeout=60,
            event_hooks={"response": [self._keep]},
        )

    def _keep(self, response: httpx.Response) -> None:
        response.read()
        self.exchanges.append(response)

    def call(self, persona: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with self.client(self.personas[persona].token) as c:
            return c.request(method, path, **kwargs)

    def api_log(self) -> str:
        return self.rf.local.sup.log_path("api").read_text(errors="replace")

    def secrets(self) -> dict[str, str]:
        """Every token and password of the run, by what it is."""
        found = {
            "service password": self.service_password,
            "Keystone admin's password": self.keystone.password,
        }
        for p in self.personas.values():
            found[f"{p.name}'s password"] = p.password
            found[f"{p.name}'s token"] = p.token
        return found


class Admin:
    """Keystone's API as its bootstrapped admin."""

    def __init__(self, keystone: KeystoneDeployment) -> None:
        self.keystone = keystone
        token, _ = keystone.token()
        self.http = httpx.Client(base_url=keystone.url, headers={"X-Auth-Token": token}, timeout=30)

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        r = self.http.post(path, json=body)
        assert r.status_code == 201, f"POST {path}: {r.status_code} {r.text}"
        found: dict[str, Any] = r.json()
        return found

    def role_id(self, name: str) -> str:
        r = self.http.get("/roles", params={"name": name})
        roles = r.json()["roles"]
        if roles:
            return str(roles[0]["id"])
        return str(self.post("/roles", {"role": {"name": name}})["role"]["id"])

    def project(self, name: str) -> str:
        body = {"project": {"name": name, "domain_id": "default", "enabled": True}}
        return str(self.post("/projects", body)["project"]["id"])

    def user(self, name: str, password: str, project_id: str, role: str) -> str:
        body = {"user": {"name": name, "domain_id": "default", "password": password}}
        user_id = str(self.post("/users", body)["user"]["id"])
        r = self.http.put(f"/projects/{project_id}/users/{user_id}/roles/{self.role_id(role)}")
        assert r.status_code == 204, r.text
        return user_id

    def register(self, service_type: str, name: str, url: str) -> None:
        self.keystone.register(service_type, name, url)


def password_token(keystone: KeystoneDeployment, user_id: str, password: str, project: str) -> str:
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {"user": {"id": user_id, "password": password}},
            },
            "scope": {"project": {"id": project}},
        }
    }
    r = httpx.post(f"{keystone.url}/auth/tokens", json=body, timeout=30)
    assert r.status_code == 201, r.text
    return r.headers["X-Subject-Token"]


def _populate(cloud: KeystoneCloud) -> None:
    """A server, a volume, an image and a network in each project, made by its member."""
    for project, persona in (("alpha", "member"), ("beta", "beta-member")):
        made: dict[str, str] = {}
        r = cloud.call(
            persona,
            "POST",
            "/v2.1/servers",
            json={"server": {"name": f"{project}-vm", "flavorRef": "1", "networks": "none"}},
        )
        assert r.status_code == 202, r.text
        made["server"] = r.json()["server"]["id"]
        r = cloud.call(
            persona, "POST", "/volume/v3/volumes", json={"volume": {"size": 1, "name": project}}
        )
        assert r.status_code == 202, r.text
        made["volume"] = r.json()["volume"]["id"]
        r = cloud.call(persona, "POST", "/image/v2/images", json={"name": f"{project}-image"})
        assert r.status_code == 201, r.text
        made["image"] = r.json()["id"]
        r = cloud.call(
            persona, "POST", "/network/v2.0/networks", json={"network": {"name": project}}
        )
        assert r.status_code == 201, r.text
        made["network"] = r.json()["network"]["id"]
        cloud.resources[project] = made
    for project, persona in (("alpha", "member"), ("beta", "beta-member")):
        server = cloud.resources[project]["server"]

        def active(persona: str = persona, server: str = server) -> bool:
            r = cloud.call(persona, "GET", f"/v2.1/servers/{server}")
            assert r.json()["server"]["status"] != "ERROR", r.text
            return r.json()["server"]["status"] == "ACTIVE"

        wait_for(active, 90, f"{project}'s server to be ACTIVE")


@pytest.fixture(scope="session")
def keystone_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeystoneCloud]:
    require_keystone()
    require(REDIS_URL, 6379, "Redis")
    tmp = Path(tmp_path_factory.mktemp("keystone-auth"))
    keystone = KeystoneDeployment(tmp / "keystone")
    rf = None
    began = time.monotonic()
    try:
        keystone.start()
        admin = Admin(keystone)
        service_password = secrets.token_urlsafe(16)
        service = admin.project("service")
        admin.user(SERVICE_USER, service_password, service, "service")
        projects = {name: admin.project(name) for name in ("alpha", "beta")}
        users = {}
        for persona, (project, role) in PERSONAS.items():
            password = secrets.token_urlsafe(16)
            users[persona] = (
                admin.user(f"rf-{persona}", password, projects[project], role),
                password,
            )
        rf = build_stack(
            "sqlite",
            tmp,
            hosts=("ks-policy-host",),
            broker="redis",
            auth="keystone",
            keystone_url=keystone.url,
            keystone_username=SERVICE_USER,
            keystone_password=service_password,
            keystone_project="service",
            keystone_region=REGION,
            # keystonemiddleware's and keystoneauth's own lines too, for the secrets check.
            log_level="DEBUG",
        )
        rf.api_endpoint()
        base = rf.local.api_url
        for service_type, name, path in (
            ("compute", "nova", "/v2.1"),
            ("volumev3", "cinderv3", "/volume/v3"),
            ("image", "glance", "/image"),
            ("network", "neutron", "/network"),
        ):
            admin.register(service_type, name, base + path)
        personas = {}
        for persona, (user_id, password) in users.items():
            project = projects[PERSONAS[persona][0]]
            token = password_token(keystone, user_id, password, project)
            personas[persona] = Persona(persona, user_id, project, password, token)
        cloud = KeystoneCloud(keystone, rf, service_password, projects, personas)
        _populate(cloud)
        print(f"\nKeystone and resizeflow behind it ready in {time.monotonic() - began:.1f}s")
        yield cloud
    finally:
        keystone.close(keep_logs=LOGS / "keystone-auth-logs")
        if rf is not None:
            destroy_stack(rf)
