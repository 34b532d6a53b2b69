"""Unchanged OpenStack clients drive ``resizeflow api`` and two real workers.

openstacksdk boots, resizes, confirms, reverts, stops and shows servers and
reads migrations and instance actions; python-openstackclient confirms and
reverts resizes and shows servers through its own command line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import openstack
import pytest
from openstack.connection import Connection

from resizeflow.api.microversion import MAX_VERSION
from tests.stack import Stack

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
    assert [(e.event, e.result) for e in confirm.events] == [
        ("compute_teardown_source_network", "Success"),
        ("compute_confirm_migration", "Success"),
        ("compute_drop_source_claim", "Success"),
        ("compute_finish_confirm", "Success"),
    ]
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
def osc(rf: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("openstack")
    cmd = [
        str(exe),
        "--os-auth-type",
        "admin_token",
        "--os-endpoint",
        rf.api_endpoint(),
        "--os-token",
        "admin:admin",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def osc_show(rf: Stack, uuid: str) -> dict[str, Any]:
    done = osc(rf, "server", "show", uuid, "-f", "json")
    assert done.returncode == 0, done.stderr
    shown: dict[str, Any] = json.loads(done.stdout)
    return shown


@pytest.fixture
def one_stack(rf: Stack) -> Stack:
    # OSC starts a fresh interpreter per command (about a second each): one stack is enough.
    if (rf.backend, rf.broker) != ("sqlite", "redis"):
        pytest.skip("python-openstackclient runs on the sqlite + redis stack only")
    return rf


def test_osc_resize_confirm_and_revert(one_stack: Stack) -> None:
    rf = one_stack
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
