"""Volumes as the virt driver takes them: connection_info read in one place, the
``<disk>`` rendered from it, and the guest's console lines about its volumes."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from resizeflow.devstack.guest import parse_console, parse_volumes
from resizeflow.errors import VirtError
from resizeflow.virt import disks
from resizeflow.virt.base import InstanceSpec, VolumeConnection
from resizeflow.virt.domain_xml import (
    HostConfig,
    disk_targets,
    domain_xml,
    placed,
    volume_disk_xml,
    volume_serials,
)

VOLUME_ID = "0b7f2c9e-43a1-4d3b-9a55-2f1f5d0f6a11"


def info(**data: Any) -> dict[str, Any]:
    base = {
        "host": "192.0.2.7",
        "port": 10809,
        "name": f"volume-{VOLUME_ID}-c1",
        "volume_id": VOLUME_ID,
        "access_mode": "rw",
    }
    return {"driver_volume_type": "nbd", "data": base | data}


def test_nbd_connection_info_becomes_a_volume_connection() -> None:
    vol = VolumeConnection.from_connection_info(info(), "vdb")
    assert vol == VolumeConnection(
        volume_id=VOLUME_ID,
        device="vdb",
        host="192.0.2.7",
        port=10809,
        export=f"volume-{VOLUME_ID}-c1",
        read_only=False,
    )
    assert VolumeConnection.from_connection_info(info(access_mode="ro"), "vdc").read_only
    # virtio-blk keeps 20 bytes of a serial: what the guest reads.
    assert vol.guest_serial == VOLUME_ID[:20]


@pytest.mark.parametrize(
    ("connection_info", "device", "reason"),
    [
        (
            {"driver_volume_type": "iscsi", "data": {"target_iqn": "iqn.x"}},
            "vdb",
            "volume driver type 'iscsi' is not supported; this hypervisor attaches nbd volumes",
        ),
        ({"data": {}}, "vdb", "volume driver type None is not supported"),
        ({"driver_volume_type": "nbd"}, "vdb", "nbd connection_info has no 'data' object"),
        (info(port=None, name=""), "vdb", "nbd connection_info lacks port, name"),
        (info(port="10809"), "vdb", "invalid port '10809'"),
        (info(port=70000), "vdb", "invalid port 70000"),
        (info(port=True), "vdb", "invalid port True"),
        (info(access_mode="rwx"), "vdb", "invalid access_mode 'rwx'"),
        (info(), "vda", "volume device 'vda' is not a virtio disk after vda"),
        (info(), "sdb", "volume device 'sdb' is not a virtio disk after vda"),
        (info(), "vd1", "volume device 'vd1' is not a virtio disk after vda"),
    ],
)
def test_other_connection_info_is_refused_with_what_is_wrong(
    connection_info: dict[str, Any], device: str, reason: str
) -> None:
    with pytest.raises(VirtError) as err:
        VolumeConnection.from_connection_info(connection_info, device)
    assert reason in str(err.value)


def test_a_volume_renders_as_an_nbd_network_disk_with_its_id_as_serial() -> None:
    disk = ET.fromstring(volume_disk_xml(VolumeConnection.from_connection_info(info(), "vdb")))
    assert (disk.tag, disk.get("type"), disk.get("device")) == ("disk", "network", "disk")
    source = disk.find("source")
    assert source is not None
    assert (source.get("protocol"), source.get("name")) == ("nbd", f"volume-{VOLUME_ID}-c1")
    hosts = [(h.get("name"), h.get("port")) for h in source.findall("host")]
    assert hosts == [("192.0.2.7", "10809")]
    target = disk.find("target")
    assert target is not None and (target.get("dev"), target.get("bus")) == ("vdb", "virtio")
    assert disk.findtext("serial") == VOLUME_ID
    assert disk.find("readonly") is None
    ro = ET.fromstring(
        volume_disk_xml(VolumeConnection.from_connection_info(info(access_mode="ro"), "vdb"))
    )
    assert ro.find("readonly") is not None


def test_the_domain_xml_holds_the_volumes_after_the_local_disks(tmp_path: Path) -> None:
    inst = InstanceSpec(uuid=str(uuid.uuid4()), vcpus=1, memory_mb=128, root_gb=1)
    other = str(uuid.uuid4())
    vols = [
        VolumeConnection.from_connection_info(info(), "vdb"),
        VolumeConnection.from_connection_info(info(volume_id=other, port=10810), "vdc"),
    ]
    host = HostConfig(virt_type="qemu", machine="pc", bridge="br0")
    xml = domain_xml(inst, tmp_path, host, "instance-x", inst.uuid, vols)
    targets = [d.find("target").get("dev") for d in ET.fromstring(xml).iter("disk")]  # type: ignore[union-attr]
    assert targets == ["vda", "vdb", "vdc"]
    assert volume_serials(xml) == {VOLUME_ID: "vdb", other: "vdc"}
    assert volume_serials(domain_xml(inst, tmp_path, host, "instance-x", inst.uuid)) == {}


def test_a_volume_whose_device_a_local_disk_has_goes_to_the_first_free_one(
    tmp_path: Path,
) -> None:
    # A flavor with ephemeral and swap: vdb and vdc are local disks.
    inst = InstanceSpec(
        uuid=str(uuid.uuid4()), vcpus=1, memory_mb=128, root_gb=1, ephemeral_gb=1, swap_mb=32
    )
    for name in (disks.ROOT, disks.EPHEMERAL, disks.SWAP):
        (tmp_path / name).touch()
    other = str(uuid.uuid4())
    vols = [
        VolumeConnection.from_connection_info(info(), "vdb"),
        VolumeConnection.from_connection_info(info(volume_id=other), "vde"),
    ]
    host = HostConfig(virt_type="qemu", machine="pc", bridge="br0")
    xml = domain_xml(inst, tmp_path, host, "instance-x", inst.uuid, vols)
    assert disk_targets(xml) == {"vda": "", "vdb": "", "vdc": "", "vdd": VOLUME_ID, "vde": other}
    taken = [f"vd{c}" for c in "abcdefghijklmnopqrstuvwxyz"]
    with pytest.raises(VirtError, match="no virtio disk name is free"):
        placed(vols[0], taken)


CONSOLE = """\
RF nproc=1
RF memtotal_kb=100000
RF disk vda bytes=1073741824
RF disk vdb bytes=33554432
RF marker written=m-root
RF boot_id=aaaa1111
RF ready
RF vol vdb serial=0b7f2c9e-43a1-4d3b-9 bytes=33554432 marker=m-vol written boot=aaaa1111
RF vollog vdb serial=0b7f2c9e-43a1-4d3b-9 marker=m-vol records=1 boots=aaaa1111:1
RF volgone vdb serial=0b7f2c9e-43a1-4d3b-9
RF vol vdc serial=0b7f2c9e-43a1-4d3b-9 bytes=33554432 marker=m-vol found boot=bbbb2222
RF vollog vdc serial=0b7f2c9e-43a1-4d3b-9 marker=m-vol records=4 boots=aaaa1111:3,bbbb2222:1
RF vollog vdc serial=0b7f2c9e-43a1-4d3b-9 marker=m-vol records=5 boo"""


def test_the_guest_volume_lines_parse_into_reports_and_a_partial_line_waits() -> None:
    reports = parse_volumes(CONSOLE)
    assert [(r.kind, r.device) for r in reports] == [
        ("vol", "vdb"),
        ("vollog", "vdb"),
        ("volgone", "vdb"),
        ("vol", "vdc"),
        ("vollog", "vdc"),
    ]
    first, log, gone, again, log2 = reports
    assert (first.serial, first.size, first.marker, first.marker_written, first.boot) == (
        VOLUME_ID[:20],
        33554432,
        "m-vol",
        True,
        "aaaa1111",
    )
    assert (log.records, log.boots) == (1, (("aaaa1111", 1),))
    assert gone.serial == VOLUME_ID[:20]
    assert (again.marker_written, again.boot) == (False, "bbbb2222")
    assert log2.boots == (("aaaa1111", 3), ("bbbb2222", 1))
    # The boot report is unchanged by the volume lines, and carries the boot id.
    (boot,) = parse_console(CONSOLE)
    assert boot.disks == {"vda": 1073741824, "vdb": 33554432}
    assert (boot.marker, boot.boot_id) == ("m-root", "aaaa1111")
