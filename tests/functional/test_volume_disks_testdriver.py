"""Volumes in the domain XML on libvirt's test driver, as the functional tier's hosts have it.

The driver on ``test://<node>`` (each open a host of its own): a volume passed
to spawn, finish_migration, finish_revert_migration or a hard reboot is in
the definition it makes, with this host's connection; attach and detach
change the definition, running or stopped, once; a recovery defines the
domain with what was attached.
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from pathlib import Path, PurePosixPath
from typing import Any

import libvirt
import pytest

from resizeflow.errors import InstanceNotFound
from resizeflow.states import PowerState
from resizeflow.virt.base import InstanceSpec, PeerHost, VolumeConnection
from resizeflow.virt.domain_xml import volume_serials
from resizeflow.virt.libvirt import LibvirtDriver

NODE_XML = """<node>
  <cpu><mhz>2000</mhz><model>x</model><topology sockets='1' cores='2' threads='2'/>
    <active>4</active><total>4</total></cpu>
  <memory>8388608</memory>
</node>
"""


def volume(volume_id: str, host: str, port: int, device: str = "vdb") -> VolumeConnection:
    info = {
        "driver_volume_type": "nbd",
        "data": {
            "host": host,
            "port": port,
            "name": f"volume-{volume_id}-{host}",
            "volume_id": volume_id,
            "access_mode": "rw",
        },
    }
    return VolumeConnection.from_connection_info(info, device)


def sources(drv: LibvirtDriver, uuid_: str) -> list[tuple[str, str, str, str, str]]:
    """Each volume disk of the persistent definition: serial, dev, export, host, port."""
    dom = drv.conn.conn().lookupByName(drv.domain_name(uuid_))
    found = []
    for disk in ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)).iter("disk"):
        if disk.get("type") != "network":
            continue
        src: Any = disk.find("source")
        host: Any = src.find("host")
        target: Any = disk.find("target")
        assert src.get("protocol") == "nbd"
        found.append(
            (
                disk.findtext("serial") or "",
                target.get("dev"),
                src.get("name"),
                host.get("name"),
                host.get("port"),
            )
        )
    return found


@pytest.fixture
def drivers(tmp_path: Path) -> tuple[LibvirtDriver, LibvirtDriver]:
    node = tmp_path / "node.xml"
    node.write_text(NODE_XML)
    return tuple(  # type: ignore[return-value]
        LibvirtDriver(f"test://{node}", tmp_path / h / "instances", hostname=h)
        for h in ("c1", "c2")
    )


def test_spawn_attach_detach_and_recover_keep_the_definition_right(
    drivers: tuple[LibvirtDriver, LibvirtDriver],
) -> None:
    drv, _ = drivers
    inst = InstanceSpec(uuid=str(uuid.uuid4()), vcpus=1, memory_mb=512, root_gb=1)
    v1, v2 = str(uuid.uuid4()), str(uuid.uuid4())
    drv.spawn(inst, power_on=True, volumes=[volume(v1, "c1", 10809)])
    assert sources(drv, inst.uuid) == [(v1, "vdb", f"volume-{v1}-c1", "c1", "10809")]
    xml_file = drv.instances_dir / inst.uuid / "libvirt.xml"
    assert volume_serials(xml_file.read_text()) == {v1: "vdb"}

    # Attached to the running domain, twice: once in the definition. Its
    # device is taken by the first volume: it goes to the first free one.
    assert drv.attach_volume(inst.uuid, volume(v2, "c1", 10810, "vdb")) == "vdc"
    assert drv.attach_volume(inst.uuid, volume(v2, "c1", 10810, "vdb")) == "vdc"
    assert drv.attached_volumes(inst.uuid) == {v1: "vdb", v2: "vdc"}
    assert [s[0] for s in sources(drv, inst.uuid)] == [v1, v2]
    assert volume_serials(xml_file.read_text()) == {v1: "vdb", v2: "vdc"}

    # Detached from the stopped domain; again, and an unknown volume, are no-ops.
    drv.power_off(inst)
    assert drv.power_state(inst.uuid) == PowerState.SHUTDOWN
    drv.detach_volume(inst.uuid, v1)
    drv.detach_volume(inst.uuid, v1)
    drv.detach_volume(inst.uuid, str(uuid.uuid4()))
    assert drv.attached_volumes(inst.uuid) == {v2: "vdc"}
    assert volume_serials(xml_file.read_text()) == {v2: "vdc"}

    # A worker restart on a host that lost its domains defines them from libvirt.xml.
    drv.conn.conn().lookupByName(drv.domain_name(inst.uuid)).undefine()
    assert drv.recover({inst.uuid: True}) == [inst.uuid]
    assert drv.attached_volumes(inst.uuid) == {v2: "vdc"}

    with pytest.raises(InstanceNotFound):
        drv.attach_volume(str(uuid.uuid4()), volume(v1, "c1", 10809))
    # No domain here holds no volume: a detach has nothing to do.
    drv.detach_volume(str(uuid.uuid4()), v2)


def test_resize_revert_and_hard_reboot_define_each_host_with_its_own_connection(
    drivers: tuple[LibvirtDriver, LibvirtDriver],
) -> None:
    src, dest = drivers
    inst = InstanceSpec(uuid=str(uuid.uuid4()), vcpus=1, memory_mb=512, root_gb=1)
    vid = str(uuid.uuid4())
    src.spawn(inst, power_on=True, volumes=[volume(vid, "c1", 10809)])
    dest_peer = PeerHost(dest.hostname, dest.hostname, PurePosixPath(dest.instances_dir))
    src.migrate_disk_and_power_off(inst, dest_peer)
    dest.finish_migration(inst, power_on=True, volumes=[volume(vid, "c2", 10811)])
    assert sources(dest, inst.uuid) == [(vid, "vdb", f"volume-{vid}-c2", "c2", "10811")]

    # The revert: the dest's domain goes, the source is defined with its new connection.
    dest.destroy(inst, destroy_disks=True)
    src.finish_revert_migration(inst, power_on=True, volumes=[volume(vid, "c1", 10812)])
    assert sources(src, inst.uuid) == [(vid, "vdb", f"volume-{vid}-c1", "c1", "10812")]

    # A hard reboot defines it again from what it is given.
    src.reboot(inst, hard=True, volumes=[volume(vid, "c1", 10813)])
    assert sources(src, inst.uuid) == [(vid, "vdb", f"volume-{vid}-c1", "c1", "10813")]
    assert src.power_state(inst.uuid) == PowerState.RUNNING


def test_volumes_asking_for_a_taken_device_are_placed_after_the_root_disk(
    drivers: tuple[LibvirtDriver, LibvirtDriver],
) -> None:
    drv, _ = drivers
    inst = InstanceSpec(uuid=str(uuid.uuid4()), vcpus=1, memory_mb=512, root_gb=1)
    v1, v2, v3 = (str(uuid.uuid4()) for _ in range(3))
    # The root disk's name (a connection_info never gives it, but a device may be
    # stale) and one name asked for twice.
    root_named = VolumeConnection(v1, "vda", "c1", 10809, f"volume-{v1}")
    drv.spawn(
        inst,
        power_on=False,
        volumes=[root_named, volume(v2, "c1", 10810), volume(v3, "c1", 10811)],
    )
    assert drv.attached_volumes(inst.uuid) == {v1: "vdb", v2: "vdc", v3: "vdd"}
