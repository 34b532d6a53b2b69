"""Unchanged OpenStack clients drive ``resizeflow api`` and two real workers.

openstacksdk boots, resizes, confirms, reverts, stops and shows servers and
reads migrations and instance actions; python-openstackclient confirms and
reverts resizes and shows servers through its own command line;
python-novaclient runs the lifecycle at 2.96 (its newest version), and the
``nova`` CLI resizes, confirms and lists migrations and actions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import openstack
import pytest
from openstack.connection import Connection

from resizeflow.api.microversion import MAX_VERSION
from tests.support.clients import osc
from tests.support.stack import Stack, wait_for

WAIT = {"wait": 90, "interval": 0.2}


def connect(rf: Stack, token: str = "admin:admin") -> Connection:
    return openstack.connect(
        auth_type="admin_token", auth={"endpoint": rf.api_endpoint(), "token": token}
    )


def boot(conn: Connection, name: str, flavor: str = "1") -> Any:
    server = conn.compute.create_server(name=name, flavor_id=flavor, networks="none")
    return conn.compute.wait_for_server(server, status="ACTIVE", **WAIT)


def test_sdk_negotiates_the_max_microversion(rf: Stack) -> None:
    conn = connect(rf)
    data = conn.compute.get_endpoint_data()
    assert tuple(data.max_microversion) == MAX_VERSION >= (2, 47)
    assert tuple(data.min_microversion) == (2, 1)
    flavors = {f.name: f for f in conn.compute.flavors()}
    assert flavors["m1.small"].ram == 2048


def test_sdk_boot_resize_confirm(rf: Stack, project: str) -> None:
    conn = connect(rf, f"alice:{project}")
    server = boot(conn, "sdk-confirm")
    assert server.flavor.original_name == "m1.tiny"
    conn.compute.resize_server(server, "2")
    server = conn.compute.wait_for_server(server, status="VERIFY_RESIZE", **WAIT)
    assert server.flavor.original_name == "m1.small" and server.flavor.ram == 2048
    conn.compute.confirm_server_resize(server)
    server = conn.compute.wait_for_server(server, status="ACTIVE", **WAIT)
    assert server.vm_state == "active" and server.task_state is None
    assert server.flavor.original_name == "m1.small"

    admin = connect(rf)
    shown = admin.compute.get_server(server.id)
    source = rf.migration(_latest_migration_id(admin, server.id)).source_compute
    assert shown.compute_host != source  # the resize moved it
    migrations = list(admin.compute.migrations(instance_uuid=server.id))
    assert [(m.status, m.migration_type) for m in migrations] == [("confirmed", "resize")]
    assert {m.source_compute for m in migrations} == {source}

    actions = list(admin.compute.server_actions(server.id))
    assert [a.action for a in actions] == ["confirmResize", "resize", "create"]
    confirm = admin.compute.get_server_action(actions[0].request_id, server.id)
    assert [(e.event, e.result) for e in confirm.events] == [("compute_confirm_resize", "Success")]
    assert all(e.start_time and e.finish_time for e in confirm.events)


def _latest_migration_id(conn: Connection, server_id: str) -> int:
    return int(next(iter(conn.compute.migrations(instance_uuid=server_id))).id)


def test_sdk_boot_resize_revert_stop(rf: Stack, project: str) -> None:
    conn = connect(rf, f"alice:{project}")
    server = boot(conn, "sdk-revert")
    admin = connect(rf)
    source = admin.compute.get_server(server.id).compute_host
    conn.compute.resize_server(server, "3")
    server = conn.compute.wait_for_server(server, status="VERIFY_RESIZE", **WAIT)
    conn.compute.revert_server_resize(server)
    server = conn.compute.wait_for_server(server, status="ACTIVE", **WAIT)
    assert server.flavor.original_name == "m1.tiny"
    assert admin.compute.get_server(server.id).compute_host == source
    (mig,) = admin.compute.migrations(instance_uuid=server.id)
    assert mig.status == "reverted"
    conn.compute.stop_server(server)
    server = conn.compute.wait_for_server(server, status="SHUTOFF", **WAIT)
    assert server.power_state == 4


def test_sdk_sees_nova_errors(rf: Stack, project: str) -> None:
    conn = connect(rf, f"alice:{project}")
    server = boot(conn, "sdk-errors")
    with pytest.raises(openstack.exceptions.ConflictException) as exc:
        conn.compute.confirm_server_resize(server)
    assert f"Cannot 'confirmResize' instance {server.id} while it is in vm_state active" in str(
        exc.value
    )
    other = connect(rf, "mallory:elsewhere")
    with pytest.raises(openstack.exceptions.NotFoundException):
        other.compute.get_server(server.id)
    with pytest.raises(openstack.exceptions.ForbiddenException):
        list(conn.compute.migrations())


# -- python-openstackclient ----------------------------------------------------------
def osc_show(rf: Stack, uuid: str) -> dict[str, Any]:
    done = osc(rf, "server", "show", uuid, "-f", "json")
    assert done.returncode == 0, done.stderr
    shown: dict[str, Any] = json.loads(done.stdout)
    return shown


# OSC starts a fresh interpreter per command (about a second each): one stack is enough.
ONE_STACK = pytest.mark.stacks("sqlite-redis")


@ONE_STACK
def test_osc_resize_confirm_and_revert(rf: Stack) -> None:
    conn = connect(rf)
    server = boot(conn, "osc")
    shown = osc_show(rf, server.id)
    assert (shown["status"], shown["OS-EXT-SRV-ATTR:host"]) == ("ACTIVE", server.compute_host)

    done = osc(rf, "server", "resize", "--flavor", "m1.small", "--wait", server.id)
    assert done.returncode == 0, done.stderr
    assert osc_show(rf, server.id)["status"] == "VERIFY_RESIZE"
    done = osc(rf, "server", "resize", "confirm", server.id)
    assert done.returncode == 0, done.stderr
    conn.compute.wait_for_server(server, status="ACTIVE", **WAIT)
    shown = osc_show(rf, server.id)
    assert shown["flavor"]["original_name"] == "m1.small"
    assert shown["OS-EXT-SRV-ATTR:host"] != server.compute_host

    conn.compute.resize_server(server, "3")
    conn.compute.wait_for_server(server, status="VERIFY_RESIZE", **WAIT)
    done = osc(rf, "server", "resize", "revert", server.id)
    assert done.returncode == 0, done.stderr
    conn.compute.wait_for_server(server, status="ACTIVE", **WAIT)
    assert osc_show(rf, server.id)["flavor"]["original_name"] == "m1.small"

    # A second confirm is refused with Nova's message, and OSC exits non-zero.
    done = osc(rf, "server", "resize", "confirm", server.id)
    assert done.returncode != 0
    assert f"Cannot 'confirmResize' instance {server.id} while it is in vm_state active" in (
        done.stderr
    )


# -- python-novaclient and the nova CLI ------------------------------------------------
def novaclient_for(rf: Stack, token: str = "admin:admin", version: str = "2.96") -> Any:
    from keystoneauth1 import session, token_endpoint
    from novaclient import client as nova_client

    auth = token_endpoint.Token(rf.api_endpoint(), token)
    return nova_client.Client(
        version, session=session.Session(auth=auth), endpoint_override=rf.api_endpoint()
    )


def nova_wait(nova: Any, server_id: str, status: str) -> Any:
    def ready() -> Any:
        found = nova.servers.get(server_id)
        assert found.status != "ERROR", getattr(found, "fault", None)
        task = getattr(found, "OS-EXT-STS:task_state", None)
        return found if found.status == status and task is None else None

    return wait_for(ready, 90, f"{server_id} to be {status}")


# novaclient runs on the SQLite and PostgreSQL stacks on Redis.
@pytest.mark.stacks("sqlite-redis", "postgresql-redis")
def test_novaclient_drives_the_lifecycle(rf: Stack, project: str) -> None:
    from novaclient import exceptions as nova_exc

    nova = novaclient_for(rf, f"alice:{project}")
    admin = novaclient_for(rf)
    assert nova.versions.get_current().version == f"{MAX_VERSION[0]}.{MAX_VERSION[1]}"
    server = nova.servers.create("nova-client", image=None, flavor="1", nics="none")
    nova_wait(nova, server.id, "ACTIVE")
    nova.servers.resize(server.id, "2")
    nova_wait(nova, server.id, "VERIFY_RESIZE")
    nova.servers.confirm_resize(server.id)
    shown = nova_wait(nova, server.id, "ACTIVE")
    assert shown.flavor["original_name"] == "m1.small"
    nova.servers.resize(server.id, "3")
    nova_wait(nova, server.id, "VERIFY_RESIZE")
    nova.servers.revert_resize(server.id)
    nova_wait(nova, server.id, "ACTIVE")

    nova.servers.lock(server.id, reason="maintenance")
    shown = nova.servers.get(server.id)
    assert (shown.locked, shown.locked_reason) == (True, "maintenance")
    nova.servers.unlock(server.id)
    with pytest.raises(nova_exc.Conflict) as exc:
        nova.servers.confirm_resize(server.id)
    assert f"Cannot 'confirmResize' instance {server.id} while it is in vm_state active" in str(
        exc.value
    )

    migrations = admin.migrations.list(instance_uuid=server.id)
    assert [(m.status, m.user_id, m.project_id) for m in migrations] == [
        ("reverted", "alice", project),
        ("confirmed", "alice", project),
    ]
    actions = nova.instance_action.list(server.id)
    assert [a.action for a in actions][:4] == ["unlock", "lock", "revertResize", "resize"]
    assert len(admin.hypervisors.list()) >= 2
    assert {s.binary for s in admin.services.list()} == {"nova-compute"}
    assert {f.name for f in nova.flavors.list()} >= {"m1.tiny", "m1.small"}
    nova.servers.delete(server.id)
    wait_for(lambda: server.id not in {s.id for s in nova.servers.list()}, 60, "the server to go")


def nova_cli(rf: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """The ``nova`` CLI with keystoneauth's admin_token plugin: a token and an endpoint.

    The CLI insists on a project and an auth URL even so (from the environment,
    as this plugin has no options for them); the plugin never calls that URL.
    """
    exe = Path(sys.executable).with_name("nova")
    cmd = [
        str(exe),
        "--os-auth-type",
        "admin_token",
        "--os-endpoint",
        rf.api_endpoint(),
        "--os-token",
        "admin:admin",
        "--os-compute-api-version",
        f"{MAX_VERSION[0]}.{MAX_VERSION[1]}",
        *args,
    ]
    env = {**os.environ, "OS_PROJECT_ID": "admin", "OS_AUTH_URL": "http://127.0.0.1:9/v3"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


@ONE_STACK
def test_nova_cli_resizes_and_confirms(rf: Stack) -> None:
    conn = connect(rf)
    server = boot(conn, "nova-cli")
    done = nova_cli(rf, "resize", "--poll", server.id, "m1.small")
    assert done.returncode == 0, done.stderr
    done = nova_cli(rf, "resize-confirm", server.id)
    assert done.returncode == 0, done.stderr
    conn.compute.wait_for_server(server, status="ACTIVE", **WAIT)
    done = nova_cli(rf, "show", server.id)
    assert done.returncode == 0, done.stderr
    assert "m1.small" in done.stdout and "ACTIVE" in done.stdout
    done = nova_cli(rf, "migration-list", "--instance-uuid", server.id)
    assert done.returncode == 0, done.stderr
    assert "confirmed" in done.stdout
    done = nova_cli(rf, "instance-action-list", server.id)
    assert done.returncode == 0, done.stderr
    assert "confirmResize" in done.stdout
    # A confirm that is not allowed exits non-zero with Nova's message.
    done = nova_cli(rf, "resize-confirm", server.id)
    assert done.returncode != 0
    assert f"Cannot 'confirmResize' instance {server.id}" in done.stderr
    conn.compute.delete_server(server)


# -- cold migration, console log, reboot and reset-state -------------------------------
def settle(conn: Connection, server_id: str, status: str) -> Any:
    """The server once it shows ``status`` with no task in progress (read anew each time:
    the SDK's own wait trusts a status it already holds)."""

    def ready() -> Any:
        found = conn.compute.get_server(server_id)
        return found if found.status == status and found.task_state is None else None

    return wait_for(ready, 90, f"{server_id} to be {status}")


def test_sdk_migrates_reboots_resets_and_reads_the_console(rf: Stack, project: str) -> None:
    admin = connect(rf)
    owner = connect(rf, f"alice:{project}")
    server = boot(owner, "sdk-ops")
    source = admin.compute.get_server(server.id).compute_host
    admin.compute.migrate_server(server)
    server = admin.compute.wait_for_server(server, status="VERIFY_RESIZE", **WAIT)
    assert server.compute_host != source and server.flavor.original_name == "m1.tiny"
    (mig,) = admin.compute.migrations(instance_uuid=server.id)
    assert (mig.migration_type, mig.status) == ("migration", "finished")
    owner.compute.confirm_server_resize(server)
    server = admin.compute.wait_for_server(server, status="ACTIVE", **WAIT)
    dest = server.compute_host
    log = owner.compute.get_server_console_output(server, length=5)["output"]
    assert f"started on {dest}" in log and source not in log

    owner.compute.reboot_server(server, "HARD")
    server = settle(owner, server.id, "ACTIVE")
    assert owner.compute.get_server_console_output(server)["output"].count("started on") == 2
    admin.compute.reset_server_state(server, "error")
    assert admin.compute.get_server(server.id).status == "ERROR"
    admin.compute.reset_server_state(server, "active")
    assert admin.compute.get_server(server.id).status == "ACTIVE"
    actions = [a.action for a in admin.compute.server_actions(server.id)]
    assert actions[:5] == ["resetState", "resetState", "reboot", "confirmResize", "migrate"]


@ONE_STACK
def test_osc_migrate_confirm_revert_console_reboot_state_and_migrations_by_host(
    rf: Stack,
) -> None:
    conn = connect(rf)
    server = boot(conn, "osc-ops")
    source = server.compute_host
    done = osc(rf, "server", "migrate", "--wait", server.id)
    assert done.returncode == 0, done.stderr
    shown = osc_show(rf, server.id)
    assert shown["status"] == "VERIFY_RESIZE" and shown["OS-EXT-SRV-ATTR:host"] != source
    done = osc(rf, "server", "migrate", "confirm", server.id)
    assert done.returncode == 0, done.stderr
    conn.compute.wait_for_server(server, status="ACTIVE", **WAIT)
    dest = osc_show(rf, server.id)["OS-EXT-SRV-ATTR:host"]

    # A stopped server migrated back to its first host, named, then reverted.
    conn.compute.stop_server(server)
    conn.compute.wait_for_server(server, status="SHUTOFF", **WAIT)
    done = osc(
        rf, "--os-compute-api-version", "2.56", "server", "migrate", "--host", source,
        "--wait", server.id,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert osc_show(rf, server.id)["OS-EXT-SRV-ATTR:host"] == source
    done = osc(rf, "server", "migrate", "revert", server.id)
    assert done.returncode == 0, done.stderr
    conn.compute.wait_for_server(server, status="SHUTOFF", **WAIT)
    assert osc_show(rf, server.id)["OS-EXT-SRV-ATTR:host"] == dest

    done = osc(rf, "server", "reboot", "--hard", "--wait", server.id)
    assert done.returncode == 0, done.stderr
    assert osc_show(rf, server.id)["status"] == "ACTIVE"
    # Nova's tail counts the empty line after the log's last newline.
    done = osc(rf, "console", "log", "show", "--lines", "2", server.id)
    assert done.returncode == 0, done.stderr
    assert f"started on {dest}" in done.stdout and done.stdout.count("started on") == 1

    done = osc(rf, "server", "set", "--auto-approve", "--state", "error", server.id)
    assert done.returncode == 0, done.stderr
    assert osc_show(rf, server.id)["status"] == "ERROR"
    done = osc(rf, "server", "set", "--auto-approve", "--state", "active", server.id)
    assert done.returncode == 0, done.stderr
    assert osc_show(rf, server.id)["status"] == "ACTIVE"

    # The host filter takes a source or a dest: each move touched both hosts.
    # (OSC's own migration list insists on an identity v3 service, Keystone,
    # before it sends anything; the nova CLI and the SDK list here, and
    # tests/conformance/test_keystone_osc.py runs OSC's with real Keystone.)
    for host in (source, dest):
        listed = [m for m in conn.compute.migrations(host=host) if m.server_id == server.id]
        assert len(listed) == 2, listed
        assert all(host in (m.source_compute, m.dest_compute) for m in listed)
        done = nova_cli(rf, "migration-list", "--host", host, "--instance-uuid", server.id)
        assert done.returncode == 0, done.stderr
        assert done.stdout.count(server.id) == 2 and done.stdout.count("migration ") == 2
    assert list(conn.compute.migrations(host="nowhere")) == []
    conn.compute.delete_server(server)
