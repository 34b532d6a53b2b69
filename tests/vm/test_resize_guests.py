"""Real guests resized, confirmed and reverted through the API, seen from inside the guest.

Each case boots the test guest from the image store, which prints on its
serial console what it sees (CPUs, memory, each virtio disk) and writes a
marker to its root disk at first boot. After a resize it must see the new
flavor and find the same marker; after a revert, the old flavor and the marker.
"""

from __future__ import annotations

import ipaddress
import time
import uuid
import xml.etree.ElementTree as ET

from resizeflow.virt import kvm_probe
from tests.vm.helpers import (
    BIG,
    SMALL,
    VmStack,
    assert_report,
    big_disks,
    small_disks,
    timed,
)


def _project() -> str:
    return f"p-{uuid.uuid4().hex[:8]}"


def _boot(vm: VmStack, host: str) -> tuple[str, str, float]:
    """Boot on ``host``; returns the server id, its marker and the boot time."""
    start = time.monotonic()
    sid = vm.boot(_project(), host)
    vm.wait_status(sid, "ACTIVE")
    (first,) = vm.wait_reports(host, sid, 1)
    assert_report(first, vcpus=1, disks=small_disks())
    assert first.marker_written and first.marker
    return sid, first.marker, timed(start)


def _stop(vm: VmStack, host: str, sid: str) -> None:
    vm.action(sid, {"os-stop": None})
    vm.wait_status(sid, "SHUTOFF")
    # A clean shutdown: the guest saw the ACPI power button and powered itself off.
    assert "RF poweroff" in vm.console(host, sid)
    assert vm.domain_state(host, sid) == "shutoff"


def test_resize_confirm_across_hosts_active(vm: VmStack) -> None:
    sid, marker, boot_s = _boot(vm, "vm1")
    before = vm.reports("vm1", sid)[0]

    # The API shows the port's real fixed IP and MAC; its tap is on vm1's bridge.
    server = vm.show(sid)
    (addr,) = server["addresses"]["private"]
    assert ipaddress.ip_address(addr["addr"]) in ipaddress.ip_network("10.0.0.0/24")
    assert addr["OS-EXT-IPS-MAC:mac_addr"].startswith("fa:16:3e:")
    tap = vm.tap_of(sid)
    assert tap in vm.taps("vm1")
    assert server["image"]["id"] == vm.image_id
    # The domain type is the one the worker detected (TCG where KVM cannot boot a guest).
    xml = ET.parse(vm.inst_dir("vm1", sid) / "libvirt.xml").getroot()
    assert xml.get("type") in {"qemu", "kvm"}
    assert f"virt type {xml.get('type')}" in vm.stack.worker_log("vm1")
    if xml.get("type") == "kvm":
        assert kvm_probe.kvm_boots([vm.files.kernel])

    start = time.monotonic()
    vm.action(sid, {"resize": {"flavorRef": BIG["id"]}})
    server = vm.wait_status(sid, "VERIFY_RESIZE")
    assert server["OS-EXT-SRV-ATTR:host"] == "vm2"
    (after,) = vm.wait_reports("vm2", sid, 1)
    resize_s = timed(start)
    assert_report(after, vcpus=2, disks=big_disks(), marker=marker)
    assert after.memtotal_kb > before.memtotal_kb + 100_000
    # The source is kept, shut off, until the resize is confirmed.
    assert vm.domain_state("vm1", sid) == "shutoff"
    assert vm.inst_dir("vm1", sid, "_resize").is_dir()
    assert tap in vm.taps("vm2") and tap not in vm.taps("vm1")

    vm.action(sid, {"confirmResize": None})
    vm.wait_status(sid, "ACTIVE")
    assert vm.domain_state("vm1", sid) is None
    assert not vm.inst_dir("vm1", sid, "_resize").exists()
    assert not vm.inst_dir("vm1", sid).exists()
    assert vm.domain_state("vm2", sid) == "running"
    assert tap in vm.taps("vm2")

    vm.delete(sid)
    vm.wait_gone(sid)
    assert vm.domain_state("vm2", sid) is None
    assert not vm.inst_dir("vm2", sid).exists()
    assert tap not in vm.taps("vm2")
    assert vm.allocations(sid, *vm.migration_uuids(sid)) == 0
    print(f"\nboot {boot_s}s, resize across hosts until the guest reported {resize_s}s")


def test_resize_revert_same_host_active(vm: VmStack) -> None:
    sid, marker, _ = _boot(vm, "vm1")
    admin = vm.stack.admin()

    start = time.monotonic()
    vm.stack.api.resize(admin, sid, BIG["id"], host="vm1")
    vm.wait_status(sid, "VERIFY_RESIZE")
    (after,) = vm.wait_reports("vm1", sid, 1)  # the new instance dir's console
    resize_s = timed(start)
    assert_report(after, vcpus=2, disks=big_disks(), marker=marker)
    assert vm.inst_dir("vm1", sid, "_resize").is_dir()

    start = time.monotonic()
    vm.action(sid, {"revertResize": None})
    vm.wait_status(sid, "ACTIVE")
    # The old dir is back, with the console of the first boot and now of this one.
    first, again = vm.wait_reports("vm1", sid, 2)
    revert_s = timed(start)
    assert_report(again, vcpus=1, disks=small_disks(), marker=marker)
    assert again.memtotal_kb == first.memtotal_kb
    assert not vm.inst_dir("vm1", sid, "_resize").exists()
    assert vm.domain_state("vm1", sid) == "running"
    assert vm.show(sid)["flavor"]["id"] == SMALL["id"]

    vm.delete(sid)
    vm.wait_gone(sid)
    assert vm.domain_state("vm1", sid) is None
    print(f"\nsame-host resize {resize_s}s, revert {revert_s}s (until the guest reported)")


def test_resize_revert_across_hosts_stopped(vm: VmStack) -> None:
    sid, marker, _ = _boot(vm, "vm1")
    _stop(vm, "vm1", sid)
    tap = vm.tap_of(sid)
    assert tap not in vm.taps("vm1")  # a shut-off domain has no tap

    vm.action(sid, {"resize": {"flavorRef": BIG["id"]}})
    vm.wait_status(sid, "VERIFY_RESIZE")
    # A STOPPED instance is defined on the dest and left off.
    assert vm.domain_state("vm2", sid) == "shutoff"
    assert vm.reports("vm2", sid) == []

    vm.action(sid, {"revertResize": None})
    vm.wait_status(sid, "SHUTOFF")
    assert vm.domain_state("vm1", sid) == "shutoff"
    # Nothing of the resize is left on the dest: no domain, no disk, no tap.
    assert vm.domain_state("vm2", sid) is None
    assert not vm.inst_dir("vm2", sid).exists()
    assert tap not in vm.taps("vm2")

    vm.action(sid, {"os-start": None})
    vm.wait_status(sid, "ACTIVE")
    _, again = vm.wait_reports("vm1", sid, 2)
    assert_report(again, vcpus=1, disks=small_disks(), marker=marker)

    vm.delete(sid)
    vm.wait_gone(sid)
    assert vm.allocations(sid, *vm.migration_uuids(sid)) == 0


def test_resize_confirm_same_host_stopped(vm: VmStack) -> None:
    sid, marker, _ = _boot(vm, "vm1")
    _stop(vm, "vm1", sid)

    vm.stack.api.resize(vm.stack.admin(), sid, BIG["id"], host="vm1")
    vm.wait_status(sid, "VERIFY_RESIZE")
    assert vm.domain_state("vm1", sid) == "shutoff"

    vm.action(sid, {"confirmResize": None})
    vm.wait_status(sid, "SHUTOFF")
    assert not vm.inst_dir("vm1", sid, "_resize").exists()

    vm.action(sid, {"os-start": None})
    vm.wait_status(sid, "ACTIVE")
    (after,) = vm.wait_reports("vm1", sid, 1)
    assert_report(after, vcpus=2, disks=big_disks(), marker=marker)

    vm.delete(sid)
    vm.wait_gone(sid)
    assert not vm.inst_dir("vm1", sid).exists()
