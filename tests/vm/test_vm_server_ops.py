"""Cold migration, the console log, reboot and reset-state with real guests.

Driven by the ``openstack`` CLI and openstacksdk, unchanged, against the vm
stack's API; what the guest saw is read from its own serial console.
"""

from __future__ import annotations

import json
import subprocess
import uuid

import openstack

from tests.functional.test_openstack_clients import osc as run_osc
from tests.support.stack import wait_for
from tests.vm.helpers import SMALL, VmStack, assert_report, small_disks


def _project() -> str:
    return f"p-{uuid.uuid4().hex[:8]}"


def osc(vm: VmStack, project: str, *args: str) -> subprocess.CompletedProcess[str]:
    done = run_osc(vm.stack, *args, token=f"admin:{project}", timeout=300)
    assert done.returncode == 0, (args, done.stderr)
    return done


def test_cold_migrate_confirm_keeps_the_flavor_and_the_disk(vm: VmStack) -> None:
    project = _project()
    sid = vm.boot(project, "vm1")
    vm.wait_status(sid, "ACTIVE")
    (first,) = vm.wait_reports("vm1", sid, 1)
    assert first.marker_written and first.marker

    osc(vm, project, "server", "migrate", "--wait", sid)
    server = vm.wait_status(sid, "VERIFY_RESIZE")
    assert server["OS-EXT-SRV-ATTR:host"] == "vm2"
    assert server["flavor"]["id"] == SMALL["id"]
    # The guest booted on vm2 at the same flavor, from the same disk.
    (moved,) = vm.wait_reports("vm2", sid, 1)
    assert_report(moved, vcpus=1, disks=small_disks(), marker=first.marker)
    # The console log is the dest's: the guest's boot there, not its first one.
    shown = osc(vm, project, "console", "log", "show", sid).stdout
    assert f"RF marker found={first.marker}" in shown and "RF marker written" not in shown
    assert vm.domain_state("vm1", sid) == "shutoff"

    osc(vm, project, "server", "migrate", "confirm", sid)
    vm.wait_status(sid, "ACTIVE")
    assert vm.domain_state("vm1", sid) is None
    assert not vm.inst_dir("vm1", sid, "_resize").exists()
    assert vm.domain_state("vm2", sid) == "running"
    conn = openstack.connect(
        auth_type="admin_token",
        auth={"endpoint": vm.stack.api_endpoint(), "token": "admin:admin"},
    )
    (mig,) = conn.compute.migrations(instance_uuid=sid)
    assert (mig.migration_type, mig.status, mig.source_compute) == ("migration", "confirmed", "vm1")
    assert [m.server_id for m in conn.compute.migrations(host="vm2")].count(sid) == 1
    vm.delete(sid)
    vm.wait_gone(sid)
    assert vm.allocations(sid, *vm.migration_uuids(sid)) == 0


def test_migrate_revert_of_a_stopped_guest_then_hard_reboot_and_reset_state(
    vm: VmStack,
) -> None:
    project = _project()
    sid = vm.boot(project, "vm1")
    vm.wait_status(sid, "ACTIVE")
    (first,) = vm.wait_reports("vm1", sid, 1)
    vm.action(sid, {"os-stop": None})
    vm.wait_status(sid, "SHUTOFF")

    osc(vm, project, "--os-compute-api-version", "2.56", "server", "migrate",
        "--host", "vm2", "--wait", sid)  # fmt: skip
    server = vm.wait_status(sid, "VERIFY_RESIZE")
    assert server["OS-EXT-SRV-ATTR:host"] == "vm2"
    assert vm.domain_state("vm2", sid) == "shutoff"  # a stopped server stays stopped
    osc(vm, project, "server", "migrate", "revert", sid)
    vm.wait_status(sid, "SHUTOFF")
    assert vm.domain_state("vm2", sid) is None and not vm.inst_dir("vm2", sid).exists()
    assert vm.domain_state("vm1", sid) == "shutoff"
    # After the revert the console log is the source's again: the first boot's.
    reverted = osc(vm, project, "console", "log", "show", sid).stdout
    assert f"RF marker written={first.marker}" in reverted and "RF poweroff" in reverted

    # A hard reboot starts it from the database's view: the guest boots on its
    # own disk again.
    osc(vm, project, "server", "reboot", "--hard", "--wait", sid)
    vm.wait_status(sid, "ACTIVE")
    (_, again) = vm.wait_reports("vm1", sid, 2)
    assert_report(again, vcpus=1, disks=small_disks(), marker=first.marker)
    log = osc(vm, project, "console", "log", "show", "--lines", "40", sid).stdout
    assert f"RF marker found={first.marker}" in log
    assert len(log.splitlines()) <= 40

    osc(vm, project, "server", "set", "--auto-approve", "--state", "error", sid)
    assert vm.show(sid)["status"] == "ERROR"
    # Nova's way out of ERROR: a hard reboot, which the guest lives through.
    osc(vm, project, "server", "reboot", "--hard", sid)
    wait_for(lambda: vm.show(sid)["status"] == "ACTIVE", 120, f"{sid} to be active")
    vm.wait_reports("vm1", sid, 3)
    assert vm.domain_state("vm1", sid) == "running"
    listed = json.loads(osc(vm, project, "server", "event", "list", sid, "-f", "json").stdout)
    assert [e["Action"] for e in listed][:3] == ["reboot", "resetState", "reboot"]
    vm.delete(sid)
    vm.wait_gone(sid)
