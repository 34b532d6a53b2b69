"""tempest.lib's compute clients drive ``resizeflow api`` and validate every answer.

tempest.lib checks each response body against Nova's JSON response schema for
the microversion it asked for (``tempest/lib/api_schema/response/compute``).
The lifecycle runs once through the clients; then every read is repeated at
each microversion where a response of the endpoints served changes, on the
SQLite and the PostgreSQL stack.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from tempest.lib import exceptions as lib_exc
from tempest.lib.api_schema.response.compute.v2_53 import hypervisors as hypervisors_v2_53
from tempest.lib.common.rest_client import FORMAT_CHECKER, JSONSCHEMA_VALIDATOR
from tempest.lib.services.compute import base_compute_client
from tempest.lib.services.compute.flavors_client import FlavorsClient
from tempest.lib.services.compute.hypervisor_client import HypervisorClient
from tempest.lib.services.compute.migrations_client import MigrationsClient
from tempest.lib.services.compute.servers_client import ServersClient
from tempest.lib.services.compute.services_client import ServicesClient
from tempest.lib.services.compute.versions_client import VersionsClient

from resizeflow.api.microversion import MAX_VERSION
from tests.support.stack import Stack

# tempest.lib runs against the SQLite and PostgreSQL stacks on Redis.
pytestmark = pytest.mark.stacks("sqlite-redis", "postgresql-redis")

MAX = f"{MAX_VERSION[0]}.{MAX_VERSION[1]}"


def _key(v: str) -> tuple[int, int]:
    major, minor = v.split(".")
    return int(major), int(minor)


def boundaries() -> list[str]:
    """Each version where a served response changes: tempest's schema ranges, and Nova's own."""
    found = {"2.1", MAX}
    for client in (ServersClient, FlavorsClient, MigrationsClient, HypervisorClient):
        found |= {i["min"] for i in client.schema_versions_info if i["min"]}
    found |= {i["min"] for i in ServicesClient.schema_versions_info if i["min"]}
    # Changes tempest has no schema boundary for: 2.21 (actions of deleted
    # servers), 2.66 (changes-before), 2.88 (hypervisor fields), 2.90 (hostname).
    found |= {"2.21", "2.66", "2.88", "2.90"}
    return sorted((v for v in found if _key(v) <= MAX_VERSION), key=_key)


class TokenAuth:
    """A tempest.lib auth provider for resizeflow's noauth tokens (``user:project``)."""

    class Credentials:
        def __init__(self, user: str, project: str) -> None:
            self.username = self.user_id = user
            self.tenant_name = self.tenant_id = self.project_id = project
            self.password = ""

    def __init__(self, endpoint: str, token: str) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.token = token
        user, _, project = token.partition(":")
        self.credentials = self.Credentials(user, project)

    def auth_request(
        self, method: str, url: str, headers: dict[str, str] | None, body: Any, filters: Any
    ) -> tuple[str, dict[str, str], Any]:
        full = url if url.startswith("http") else f"{self.endpoint}/{url.lstrip('/')}"
        return full, {**(headers or {}), "X-Auth-Token": self.token}, body

    def base_url(self, filters: Any = None) -> str:
        return self.endpoint

    def get_token(self) -> str:
        return self.token

    def set_alt_auth_data(self, request_part: Any, auth_data: Any) -> None:
        return None

    def reset_alt_auth_data(self) -> None:
        return None


class Clients:
    def __init__(self, endpoint: str, token: str) -> None:
        auth = TokenAuth(endpoint, token)
        args = (auth, "compute", "RegionOne")
        self.servers = ServersClient(*args)
        self.flavors = FlavorsClient(*args)
        self.migrations = MigrationsClient(*args)
        self.hypervisors = HypervisorClient(*args)
        self.services = ServicesClient(*args)
        self.versions = VersionsClient(*args)


class at_version:
    """Set tempest's compute microversion, as its APIMicroversionFixture does."""

    def __init__(self, version: str | None) -> None:
        self.version = version

    def __enter__(self) -> None:
        self.saved = base_compute_client.COMPUTE_MICROVERSION
        base_compute_client.COMPUTE_MICROVERSION = self.version

    def __exit__(self, *exc: object) -> None:
        base_compute_client.COMPUTE_MICROVERSION = self.saved


def wait_server(c: Clients, uuid: str, status: str, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        server: dict[str, Any] = c.servers.show_server(uuid)["server"]
        if server["status"] == status and server["OS-EXT-STS:task_state"] is None:
            return server
        assert server["status"] != "ERROR", server.get("fault")
        assert time.monotonic() < deadline, f"{uuid} is {server['status']}, not {status}"
        time.sleep(0.2)


def boot(c: Clients, name: str) -> str:
    body = c.servers.create_server(name=name, flavorRef="1", networks="none")
    uuid = str(body["server"]["id"])
    wait_server(c, uuid, "ACTIVE")
    return uuid


@pytest.fixture(scope="module")
def tempest_stack(stack: Stack) -> Iterator[dict[str, Any]]:
    """The lifecycle run once through tempest's clients at the newest version.

    Servers are left confirmed, reverted, awaiting confirmation, stopped and
    locked, and deleted, so that every read below has each shape to show.
    """
    admin = Clients(stack.api_endpoint(), "admin:admin")
    member = Clients(stack.api_endpoint(), "alice:p-tempest")
    with at_version(MAX):
        confirmed = boot(member, "tempest-confirm")
        member.servers.resize_server(confirmed, "2")
        wait_server(member, confirmed, "VERIFY_RESIZE")
        member.servers.confirm_resize_server(confirmed)
        wait_server(member, confirmed, "ACTIVE")

        verify = boot(member, "tempest-verify")
        member.servers.resize_server(verify, "2")
        wait_server(member, verify, "VERIFY_RESIZE")
        member.servers.revert_resize_server(verify)
        wait_server(member, verify, "ACTIVE")
        member.servers.resize_server(verify, "3")
        wait_server(member, verify, "VERIFY_RESIZE")

        stopped = boot(member, "tempest-stopped")
        member.servers.stop_server(stopped)
        wait_server(member, stopped, "SHUTOFF")
        member.servers.lock_server(stopped, locked_reason="tempest")
        member.servers.unlock_server(stopped)
        admin.servers.lock_server(stopped)

        gone = boot(member, "tempest-gone")
        member.servers.delete_server(gone)
        deadline = time.monotonic() + 60
        while True:
            try:
                member.servers.show_server(gone)
            except lib_exc.NotFound:
                break
            assert time.monotonic() < deadline, f"{gone} was not deleted"
            time.sleep(0.2)
    yield {
        "admin": admin,
        "member": member,
        "servers": [confirmed, verify, stopped],
        "gone": gone,
    }
    with at_version(MAX):
        admin.servers.unlock_server(stopped)
        for uuid in (confirmed, verify, stopped):
            admin.servers.delete_server(uuid)
    stack.quiesce()


def list_actions(c: Clients, uuid: str, query: str) -> dict[str, Any]:
    """The paged instance-action list (2.58), which tempest's client has no parameters for."""
    resp, body = c.servers.get(f"servers/{uuid}/os-instance-actions?{query}")
    found: dict[str, Any] = json.loads(body)
    schema = c.servers.get_schema(c.servers.schema_versions_info)
    c.servers.validate_response(schema.list_instance_actions, resp, found)
    return found


def list_migrations_page(c: Clients, query: str) -> dict[str, Any]:
    """A page of migrations (2.59).

    Nova adds ``migrations_links`` to a page that may have a next one, and
    tempest's schema for 2.59 does not list that key: it is allowed here, and
    every other part of tempest's schema still applies.
    """
    resp, body = c.migrations.get(f"os-migrations?{query}")
    found: dict[str, Any] = json.loads(body)
    tempest_schema = c.migrations.get_schema(c.migrations.schema_versions_info)
    schema = copy.deepcopy(tempest_schema.list_migrations)
    schema["response_body"]["properties"]["migrations_links"] = copy.deepcopy(
        hypervisors_v2_53.list_hypervisors_detail["response_body"]["properties"][
            "hypervisors_links"
        ]
    )
    c.migrations.validate_response(schema, resp, found)
    return found


def _hypervisor_v2_88(detail: dict[str, Any]) -> dict[str, Any]:
    """tempest has no schema past 2.53 for hypervisors: 2.88's, built from 2.53's."""
    schema = copy.deepcopy(detail)
    dropped = {
        "vcpus",
        "memory_mb",
        "local_gb",
        "vcpus_used",
        "memory_mb_used",
        "local_gb_used",
        "free_ram_mb",
        "free_disk_gb",
        "disk_available_least",
        "current_workload",
        "running_vms",
        "cpu_info",
    }
    for key in dropped:
        schema["properties"].pop(key)
    schema["required"] = [k for k in schema["required"] if k not in dropped]
    schema["properties"]["uptime"] = {"type": ["string", "null"]}
    return schema


def _validate(body: Any, schema: dict[str, Any]) -> None:
    jsonschema.validate(body, schema, cls=JSONSCHEMA_VALIDATOR, format_checker=FORMAT_CHECKER)


@pytest.mark.parametrize("version", boundaries())
def test_every_read_validates_at_each_microversion(
    tempest_stack: dict[str, Any], version: str
) -> None:
    admin: Clients = tempest_stack["admin"]
    member: Clients = tempest_stack["member"]
    servers: list[str] = tempest_stack["servers"]
    v = _key(version)
    with at_version(version):
        for c in (admin, member):
            every: dict[str, Any] = {"all_tenants": "1"} if c is admin else {}
            listed = c.servers.list_servers(**every)["servers"]
            assert set(servers) <= {s["id"] for s in listed}
            detailed = c.servers.list_servers(detail=True, **every)["servers"]
            assert {"ACTIVE", "VERIFY_RESIZE", "SHUTOFF"} <= {s["status"] for s in detailed}
            page = c.servers.list_servers(detail=True, limit=1, **every)
            assert len(page["servers"]) == 1 and page["servers_links"][0]["rel"] == "next"
            for uuid in servers:
                shown = c.servers.show_server(uuid)["server"]
                assert shown["id"] == uuid
                actions = c.servers.list_instance_actions(uuid)["instanceActions"]
                assert actions[-1]["action"] == "create"
                for a in actions:
                    one = c.servers.show_instance_action(uuid, a["request_id"])["instanceAction"]
                    assert one["request_id"] == a["request_id"]
                    if v < (2, 51) and c is member:
                        assert "events" not in one
                    elif a["action"] in ("resize", "confirmResize", "revertResize"):
                        assert one["events"], one  # one per workflow step
            if v >= (2, 58):
                page = list_actions(c, servers[1], "limit=1")
                assert len(page["instanceActions"]) == 1 and page["links"][0]["rel"] == "next"
                after = list_actions(
                    c, servers[1], f"marker={page['instanceActions'][0]['request_id']}"
                )
                assert len(after["instanceActions"]) == 3
                since = list_actions(c, servers[1], "changes-since=2000-01-01T00:00:00Z")
                assert len(since["instanceActions"]) == 4  # create, resize, revert, resize
                if v >= (2, 66):
                    before = list_actions(c, servers[1], "changes-before=2000-01-01T00:00:00Z")
                    assert before["instanceActions"] == []
            flavors = c.flavors.list_flavors(detail=True)["flavors"]
            assert {f["name"] for f in flavors} >= {"m1.tiny", "m1.small"}
            c.flavors.list_flavors()
            c.flavors.show_flavor("1")
        # Actions of a deleted server: readable from 2.21, not found before.
        gone = tempest_stack["gone"]
        if v >= (2, 21):
            actions = admin.servers.list_instance_actions(gone)["instanceActions"]
            assert [a["action"] for a in actions] == ["delete", "create"]
        else:
            with pytest.raises(lib_exc.NotFound):
                admin.servers.list_instance_actions(gone)

        migrations = admin.migrations.list_migrations()["migrations"]
        statuses = {m["status"] for m in migrations if m["instance_uuid"] in servers}
        assert {"confirmed", "finished"} <= statuses
        if v >= (2, 59):
            page = list_migrations_page(admin, "limit=1")
            assert len(page["migrations"]) == 1 and page["migrations_links"][0]["rel"] == "next"
            rest = list_migrations_page(admin, f"marker={page['migrations'][0]['uuid']}")
            assert len(rest["migrations"]) == len(migrations) - 1
        if v >= (2, 80):
            mine = admin.migrations.list_migrations(project_id="p-tempest")["migrations"]
            assert mine and {(m["user_id"], m["project_id"]) for m in mine} == {
                ("alice", "p-tempest")
            }
        with pytest.raises(lib_exc.Forbidden):
            member.migrations.list_migrations()
        # A server's live migrations in progress (2.23), validated by tempest's schema:
        # none, as resizeflow does no live migrations.
        for uuid in servers:
            if v >= (2, 23):
                assert admin.servers.list_in_progress_live_migration(uuid)["migrations"] == []
            else:
                with pytest.raises(lib_exc.NotFound):
                    admin.servers.list_in_progress_live_migration(uuid)

        admin.services.list_services()
        brief = admin.hypervisors.list_hypervisors()["hypervisors"]
        assert len(brief) >= 2
        if v < (2, 88):
            admin.hypervisors.list_hypervisors(detail=True)
            admin.hypervisors.show_hypervisor(brief[0]["id"])
        else:
            # As in Nova, 2.88 shows the uptime in the detailed list and on one hypervisor.
            detail = _hypervisor_v2_88(hypervisors_v2_53.hypervisor_detail)
            with_uptime = {**detail, "required": [*detail["required"], "uptime"]}
            _, body = admin.hypervisors.get("os-hypervisors/detail")
            listed = json.loads(body)["hypervisors"]
            assert len(listed) == len(brief)
            for h in listed:
                _validate(h, with_uptime)
            _, body = admin.hypervisors.get(f"os-hypervisors/{brief[0]['id']}")
            _validate(json.loads(body)["hypervisor"], with_uptime)
        if v >= (2, 53):
            with_servers = admin.hypervisors.list_hypervisors(with_servers=True)["hypervisors"]
            on = {s["uuid"] for h in with_servers for s in h.get("servers", ())}
            assert set(servers) <= on


def test_version_documents_validate(tempest_stack: dict[str, Any]) -> None:
    admin: Clients = tempest_stack["admin"]
    versions = admin.versions.list_versions()["versions"]
    # As Nova lists them: the deprecated v2.0 (not served), then v2.1.
    assert [(d["id"], d["version"], d["min_version"]) for d in versions] == [
        ("v2.0", "", ""),
        ("v2.1", MAX, "2.1"),
    ]
    one = admin.versions.get_version_by_url(admin.versions.base_url + "/")
    assert one["version"]["version"] == MAX


@pytest.mark.parametrize("version", ["2.1", "2.55", "2.56", MAX])
def test_migrate_reboot_reset_state_and_console_validate(
    tempest_stack: dict[str, Any], version: str
) -> None:
    """Every answer of the actions around confirm and revert, through tempest's
    clients, which check each against Nova's schema for its version."""
    admin: Clients = tempest_stack["admin"]
    member: Clients = tempest_stack["member"]
    with at_version(MAX):  # networks "none" needs 2.37
        uuid = boot(member, f"tempest-ops-{version}")
    with at_version(version):
        source = admin.servers.show_server(uuid)["server"]["OS-EXT-SRV-ATTR:host"]
        admin.servers.migrate_server(uuid)
        moved = wait_server(admin, uuid, "VERIFY_RESIZE")
        assert moved["OS-EXT-SRV-ATTR:host"] != source
        member.servers.confirm_resize_server(uuid)
        wait_server(member, uuid, "ACTIVE")
        if _key(version) >= (2, 56):
            admin.servers.migrate_server(uuid, host=source)
            assert wait_server(admin, uuid, "VERIFY_RESIZE")["OS-EXT-SRV-ATTR:host"] == source
            member.servers.revert_resize_server(uuid)
            wait_server(member, uuid, "ACTIVE")
        with pytest.raises(lib_exc.Forbidden):
            member.servers.migrate_server(uuid)

        member.servers.reboot_server(uuid, type="SOFT")
        wait_server(member, uuid, "ACTIVE")
        member.servers.reboot_server(uuid, type="HARD")
        wait_server(member, uuid, "ACTIVE")
        output = member.servers.get_console_output(uuid, length=3)["output"]
        assert "started on" in output and output.count("\n") == 2
        # The move, the soft and the hard reboot each started the guest where it is now.
        assert member.servers.get_console_output(uuid)["output"].count("started on") >= 3

        admin.servers.reset_state(uuid, state="error")
        assert admin.servers.show_server(uuid)["server"]["status"] == "ERROR"
        admin.servers.reset_state(uuid, state="active")
        with pytest.raises(lib_exc.Forbidden):
            member.servers.reset_state(uuid, state="error")
        with pytest.raises(lib_exc.BadRequest):
            member.servers.reboot_server(uuid, type="WARM")
        actions = [
            a["action"] for a in member.servers.list_instance_actions(uuid)["instanceActions"]
        ]
        assert actions[:4] == ["resetState", "resetState", "reboot", "reboot"]
        admin.servers.delete_server(uuid)
