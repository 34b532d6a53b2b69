"""A volume exported by a real qemu-storage-daemon, in a real guest, through the virt driver.

The driver alone, as the flows will call it: the domain is defined with the
volume's NBD connection, destroyed and defined again (as a resize moves it),
and the volume is detached and attached while the guest runs. The guest
reports what it sees (:func:`resizeflow.devstack.guest.parse_volumes`), and
the volume's file on the storage side shows what reached it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from resizeflow.devstack.guest import VOLUME_LOG_SLOT, VolumeReport, parse_volumes
from resizeflow.openstack.base import ImageSpec
from resizeflow.virt.base import InstanceSpec, VolumeConnection
from resizeflow.virt.domain_xml import volume_serials
from resizeflow.virt.libvirt import LibvirtDriver
from tests.support.nbd import MiB, NbdVolume, nbd_volume
from tests.vm.helpers import BOOT, VmStack, wait_volume_report

VOLUME_SIZE = 32 * MiB
DETACH = 90.0  # a guest under TCG on a busy machine takes its time over an unplug


class Guest:
    """One instance on a driver of its own, and what its console says about volumes."""

    def __init__(self, vm: VmStack, drv: LibvirtDriver, inst: InstanceSpec) -> None:
        self.vm, self.drv, self.inst = vm, drv, inst

    def reports(self) -> list[VolumeReport]:
        log = self.drv.instances_dir / self.inst.uuid / "console.log"
        return parse_volumes(log.read_text(errors="replace")) if log.exists() else []

    def wait(
        self, what: str, after: int, match: Callable[[VolumeReport], bool]
    ) -> tuple[int, VolumeReport]:
        """The first report from the ``after``-th on that ``match`` accepts, and its index."""
        return wait_volume_report(self.reports, what, match, after)

    def live_volumes(self) -> dict[str, str]:
        """The volumes of the running domain, as libvirtd describes it now."""
        dom = self.vm.conn().lookupByName(self.drv.domain_name(self.inst.uuid))
        return volume_serials(dom.XMLDesc(0))


def _boots_on_storage(vol: NbdVolume) -> tuple[str, dict[str, int]]:
    """The volume's marker and its records per boot, read from its file."""
    header = vol.read(0, 64).decode().split()
    assert header[0] == "RFVOL", header
    count = int(header[2])
    records = vol.read(VOLUME_LOG_SLOT * 64, count * 64).decode().split("\n")[:count]
    boots: dict[str, int] = {}
    for rec in records:
        boot = rec.split()[0]
        boots[boot] = boots.get(boot, 0) + 1
    return header[1], boots


@pytest.fixture
def guest_with_volume(vm: VmStack, tmp_path: Path) -> Iterator[tuple[Guest, NbdVolume]]:
    # No NICs: the guest plugs no network, so makes no bridge.
    drv = LibvirtDriver(
        "qemu:///system",
        tmp_path / "instances",
        hostname="vol",
        virt_type="qemu",
        # Named like the stack's, so a failed test's domain goes with the stack's leftovers.
        name_template=f"rf{vm.run_id}-vol-{{uuid}}",
        shutdown_timeout=20,
        running_timeout=30,
    )
    files = vm.files
    image = ImageSpec(
        id=vm.image_id,
        path=str(files.disk),
        disk_format="raw",
        virtual_size=files.disk.stat().st_size,
        kernel=str(files.kernel),
        ramdisk=str(files.initrd),
        cmdline=files.cmdline,
    )
    inst = InstanceSpec(uuid=str(uuid.uuid4()), vcpus=1, memory_mb=128, root_gb=1, image=image)
    try:
        with nbd_volume(tmp_path / "storage", VOLUME_SIZE) as vol:
            yield Guest(vm, drv, inst), vol
            drv.destroy(inst, destroy_disks=True)
    finally:
        drv.purge(inst.uuid)


def test_volume_follows_the_guest_across_a_redefinition_and_a_live_detach_and_attach(
    guest_with_volume: tuple[Guest, NbdVolume], tmp_path: Path
) -> None:
    guest, vol = guest_with_volume
    drv, inst = guest.drv, guest.inst
    conn = VolumeConnection.from_connection_info(vol.connection_info(), "vdb")
    serial = conn.guest_serial

    # First boot: the guest finds the blank volume, writes its marker, logs records.
    drv.spawn(inst, power_on=True, volumes=[conn], deadline=time.monotonic() + BOOT)
    assert drv.attached_volumes(inst.uuid) == {vol.volume_id: "vdb"}
    at, seen = guest.wait("the volume's first sight", 0, lambda r: r.kind == "vol")
    assert (seen.serial, seen.size, seen.marker_written) == (serial, VOLUME_SIZE, True), seen
    marker, first_boot = seen.marker, seen.boot
    guest.wait(
        "two records of the first boot",
        at,
        lambda r: r.kind == "vollog" and r.boots == ((first_boot, 2),),
    )

    # Destroyed and defined again, as a resize moves it: a new boot, the same volume.
    drv.destroy(inst, destroy_disks=False)
    on_storage, boots = _boots_on_storage(vol)
    assert on_storage == marker and set(boots) == {first_boot} and boots[first_boot] >= 2
    drv.spawn(inst, power_on=True, volumes=[conn], deadline=time.monotonic() + BOOT)
    at, seen = guest.wait(
        "the volume seen again", at + 1, lambda r: r.kind == "vol" and r.boot != first_boot
    )
    assert (seen.serial, seen.marker, seen.marker_written) == (serial, marker, False), seen
    second_boot = seen.boot
    at, logged = guest.wait(
        "records of both boots", at, lambda r: r.kind == "vollog" and len(r.boots) == 2
    )
    # Everything the first boot flushed is still there, before what the second wrote.
    assert logged.boots[0] == (first_boot, boots[first_boot]), logged
    assert logged.boots[1][0] == second_boot, logged

    # A live detach: libvirt returns once the guest has let the disk go, and it says so.
    drv.detach_volume(inst.uuid, vol.volume_id, deadline=time.monotonic() + DETACH)
    assert drv.attached_volumes(inst.uuid) == {}
    assert guest.live_volumes() == {}
    at, _ = guest.wait("the volume gone", at, lambda r: r.kind == "volgone" and r.serial == serial)
    drv.detach_volume(inst.uuid, vol.volume_id)  # gone already: nothing to do
    _, before_attach = _boots_on_storage(vol)

    # A live attach brings it back, with its marker and its whole log; twice is once.
    drv.attach_volume(inst.uuid, conn)
    drv.attach_volume(inst.uuid, conn)
    assert drv.attached_volumes(inst.uuid) == {vol.volume_id: "vdb"}
    assert guest.live_volumes() == {vol.volume_id: "vdb"}
    at, seen = guest.wait("the volume back", at, lambda r: r.kind == "vol")
    assert (seen.serial, seen.marker, seen.boot) == (serial, marker, second_boot), seen
    _, logged = guest.wait(
        "a record after the attach",
        at,
        lambda r: r.kind == "vollog" and r.records > sum(before_attach.values()),
    )
    assert logged.boots[0] == (first_boot, boots[first_boot]), logged
    assert logged.boots[1] == (second_boot, before_attach[second_boot] + 1), logged
    # The instance dir's libvirt.xml, which a host recovery defines, holds it too.
    xml_file = drv.instances_dir / inst.uuid / "libvirt.xml"
    assert volume_serials(xml_file.read_text()) == {vol.volume_id: "vdb"}

    # A blank volume hot-plugged beside it, asking for the device the first has.
    with nbd_volume(tmp_path / "storage2", 2 * VOLUME_SIZE) as blank:
        second = VolumeConnection.from_connection_info(blank.connection_info(), "vdb")
        assert drv.attach_volume(inst.uuid, second) == "vdc"
        at, seen = guest.wait(
            "the blank volume's first sight",
            at,
            lambda r: r.kind == "vol" and r.serial == second.guest_serial,
        )
        assert (seen.size, seen.marker_written, seen.boot) == (
            2 * VOLUME_SIZE,
            True,
            second_boot,
        ), seen
        assert seen.marker != marker
        guest.wait(
            "a record on the blank volume",
            at,
            lambda r: r.kind == "vollog" and r.serial == second.guest_serial,
        )
        assert _boots_on_storage(blank)[0] == seen.marker
        drv.detach_volume(inst.uuid, blank.volume_id, deadline=time.monotonic() + DETACH)
        assert guest.live_volumes() == {vol.volume_id: "vdb"}
