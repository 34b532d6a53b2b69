"""A server's volume through attach, resize, revert, confirm and delete, on a real storage host.

The storage host's exports are what is checked, not only the records: after
each step exactly the host the server runs on can reach the volume, an NBD
client of the host it left is refused, what was written through one host's
export is read back through the next one's, and the domain the host defined
holds the volume at that host's export. A step that fails after its storage
call and runs again leaves one connection, not two.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from resizeflow.compute.volumes import BlockDevice
from resizeflow.states import MigrationStatus, VmState
from resizeflow.virt.layout import DOMAIN_XML_FILE
from tests.functional.test_notifications import check
from tests.support.stack import Stack, wait_for
from tests.support.volumes import (
    connection,
    exported_to,
    holds,
    reachable,
    require_tools,
    service,
    status,
    wait_status,
    wait_volume_ops,
    write,
)

pytestmark = pytest.mark.stacks("sqlite-redis", "postgresql-rabbitmq")

BLOCK = 4096
FIRST, SECOND = b"\x11" * BLOCK, b"\x22" * BLOCK


def domain_volumes(rf: Stack, host: str, uuid: str) -> dict[str, tuple[str, str]]:
    """The volumes of the domain ``host`` defined (its ``libvirt.xml``): volume id to
    (target device, NBD export name)."""
    xml = (rf.instance_dir(host, uuid) / DOMAIN_XML_FILE).read_text()
    found = {}
    for disk in ET.fromstring(xml).iter("disk"):
        source, target = disk.find("source"), disk.find("target")
        if disk.get("type") == "network" and source is not None and target is not None:
            found[disk.findtext("serial") or ""] = (target.get("dev", ""), source.get("name", ""))
    return found


def resize(rf: Stack, project: str, uuid: str, flavor: str) -> int:
    mig_id = rf.api.resize(rf.ctx(project), uuid, flavor)
    rf.wait_migration(mig_id, MigrationStatus.FINISHED)
    rf.wait_instance(uuid, VmState.RESIZED)
    return mig_id


def read_back(rf: Stack, volume_id: str, *expected: tuple[int, bytes]) -> None:
    """Read the volume through a connection of a reader host of the test's own, then cut it."""
    storage = service(rf).storage
    info = storage.initialize_connection(volume_id, "test-reader").to_dict()
    try:
        for offset, data in expected:
            assert holds(info, offset, data), offset
    finally:
        storage.terminate_connection(volume_id, "test-reader")


def attach(rf: Stack, project: str, uuid: str, volume_id: str) -> str:
    done = rf.api.attach_volume(rf.ctx(project), uuid, BlockDevice(volume_id))
    wait_volume_ops(rf, uuid)
    wait_status(rf, volume_id, "in-use")
    assert done.device is not None
    return done.device


def test_the_volume_follows_the_server_and_only_its_host_reaches_it(
    rf: Stack, project: str
) -> None:
    require_tools()
    vol = service(rf).create(project, "alice", 1, name="data")
    uuid = rf.boot(project)
    source = rf.instance(uuid).host
    assert source is not None
    rf.notifications()  # drain the boot's

    assert attach(rf, project, uuid, vol.id) == "/dev/vdb"
    assert exported_to(rf, vol.id) == [source]
    on_source = connection(rf, vol.id, source)
    assert domain_volumes(rf, source, uuid) == {vol.id: ("vdb", on_source["data"]["name"])}
    # Each in the shape of Nova's sample (InstanceActionVolumePayload), with the volume.
    events = [(check(n), n["payload"]["nova_object.data"]["volume_id"]) for n in rf.notifications()]
    assert events == [
        ("instance.volume_attach.start", vol.id),
        ("instance.volume_attach.end", vol.id),
    ]
    write(on_source, 0, FIRST)

    # Resize: the source's connection is cut after the power-off, the dest's made.
    mig_id = resize(rf, project, uuid, "2")
    dest = rf.migration(mig_id).dest_compute
    assert dest is not None and dest != source
    assert exported_to(rf, vol.id) == [dest]
    assert not reachable(on_source)
    on_dest = connection(rf, vol.id, dest)
    assert on_dest["data"]["name"] != on_source["data"]["name"]
    assert domain_volumes(rf, dest, uuid) == {vol.id: ("vdb", on_dest["data"]["name"])}
    assert holds(on_dest, 0, FIRST)
    write(on_dest, BLOCK, SECOND)  # written while the resize awaits confirmation

    # Revert: the dest's connection is cut, the source's made again; both writes are there.
    rf.api.revert_resize(rf.ctx(project), uuid)
    rf.wait_migration(mig_id, MigrationStatus.REVERTED)
    rf.wait_instance(uuid, VmState.ACTIVE)
    assert exported_to(rf, vol.id) == [source]
    assert not reachable(on_dest)
    back = connection(rf, vol.id, source)
    assert domain_volumes(rf, source, uuid) == {vol.id: ("vdb", back["data"]["name"])}
    assert holds(back, 0, FIRST) and holds(back, BLOCK, SECOND)
    assert status(rf, vol.id) == ("in-use", "attached")

    # Resize again and confirm: the volume stays with the dest only.
    mig_id = resize(rf, project, uuid, "2")
    dest = rf.migration(mig_id).dest_compute
    assert dest is not None
    rf.api.confirm_resize(rf.ctx(project), uuid)
    rf.wait_migration(mig_id, MigrationStatus.CONFIRMED)
    rf.wait_instance(uuid, VmState.ACTIVE)
    assert exported_to(rf, vol.id) == [dest]
    assert not reachable(back)
    assert set(domain_volumes(rf, dest, uuid)) == {vol.id}

    # Delete: the volume is detached and available, with everything written.
    rf.api.delete(rf.ctx(project), uuid)
    wait_for(lambda: rf.instance(uuid).deleted or None, 60, f"{uuid} to be deleted")
    wait_status(rf, vol.id, "available")
    assert status(rf, vol.id) == ("available", "detached")
    assert exported_to(rf, vol.id) == []
    assert service(rf).get(vol.id).attachments == ()
    read_back(rf, vol.id, (0, FIRST), (BLOCK, SECOND))
    service(rf).delete(vol.id)


def test_detach_cuts_the_connection_and_leaves_the_data(rf: Stack, project: str) -> None:
    require_tools()
    vol = service(rf).create(project, "alice", 1)
    uuid = rf.boot(project)
    host = rf.instance(uuid).host
    assert host is not None
    attach(rf, project, uuid, vol.id)
    info = connection(rf, vol.id, host)
    write(info, 0, FIRST)
    rf.notifications()

    rf.api.detach_volume(rf.ctx(project), uuid, vol.id)
    wait_volume_ops(rf, uuid)
    wait_status(rf, vol.id, "available")
    assert exported_to(rf, vol.id) == []
    assert not reachable(info)
    assert domain_volumes(rf, host, uuid) == {}
    # Each in the shape of Nova's sample (InstanceActionVolumePayload), with the volume.
    events = [(check(n), n["payload"]["nova_object.data"]["volume_id"]) for n in rf.notifications()]
    assert events == [
        ("instance.volume_detach.start", vol.id),
        ("instance.volume_detach.end", vol.id),
    ]
    read_back(rf, vol.id, (0, FIRST))
    rf.api.delete(rf.ctx(project), uuid)
    rf.quiesce()
    service(rf).delete(vol.id)


@pytest.mark.parametrize(
    "step",
    [
        "resizeflow.resize.finish_resize:after_hypervisor",
        "resizeflow.resize.resize_instance:after_hypervisor",
    ],
)
def test_a_step_repeated_after_its_storage_call_leaves_one_connection(
    rf: Stack, project: str, step: str
) -> None:
    """The step fails once after its connections were made or cut, before it commits;
    its retry makes or cuts them again, a no-op, and the resize finishes with one."""
    require_tools()
    vol = service(rf).create(project, "alice", 1)
    uuid = rf.boot(project)
    source = rf.instance(uuid).host
    attach(rf, project, uuid, vol.id)
    rf.set_failpoints({step: [{"mode": "transient", "times": 1, "instance_uuid": uuid}]})
    mig_id = resize(rf, project, uuid, "2")
    mig = rf.migration(mig_id)
    row = next(r for r in rf.journal(mig_id) if r.step == step.partition(":")[0])
    assert row.attempts == 2  # it did fail once, after the hypervisor work
    assert exported_to(rf, vol.id) == [mig.dest_compute]
    assert source != mig.dest_compute
    info = connection(rf, vol.id, str(mig.dest_compute))
    assert reachable(info)
    rf.api.delete(rf.ctx(project), uuid)
    wait_status(rf, vol.id, "available")
    assert exported_to(rf, vol.id) == []
    service(rf).delete(vol.id)


def revert_failing_at(rf: Stack, project: str, step: str) -> tuple[str, str, str]:
    """A server with a volume, resized and then reverted with ``step`` failing for good:
    the server, the volume and the dest's connection_info it had."""
    vol = service(rf).create(project, "alice", 1)
    uuid = rf.boot(project)
    attach(rf, project, uuid, vol.id)
    mig_id = resize(rf, project, uuid, "2")
    dest = rf.migration(mig_id).dest_compute
    on_dest = connection(rf, vol.id, str(dest))
    rf.set_failpoints({step: [{"mode": "fatal", "times": 1, "instance_uuid": uuid}]})
    rf.api.revert_resize(rf.ctx(project), uuid)
    rf.wait_instance(uuid, VmState.ERROR)
    assert not reachable(on_dest)
    assert exported_to(rf, vol.id) == []
    return uuid, vol.id, str(dest)


def test_terminate_volume_connections_cuts_the_dest(rf: Stack, project: str) -> None:
    """The revert's own step cuts the dest's connection: once it is done (the
    step after it failing), no host reaches the volume."""
    require_tools()
    uuid, volume_id, _ = revert_failing_at(rf, project, "resizeflow.revert.drop_dest_claim")
    rf.api.delete(rf.ctx(project), uuid)
    wait_status(rf, volume_id, "available")
    assert exported_to(rf, volume_id) == []
    service(rf).delete(volume_id)


def test_a_hard_reboot_after_a_failed_revert_connects_the_source(rf: Stack, project: str) -> None:
    """The hard reboot that recovers a server whose revert failed in finish_revert
    connects the server's host and gives the domain the volume again."""
    require_tools()
    step = "resizeflow.revert.finish_revert:hypervisor"
    uuid, vol_id, _ = revert_failing_at(rf, project, step)
    source = rf.instance(uuid).host
    assert source is not None

    rf.api.reboot(rf.ctx(project), uuid, "HARD")
    # (From ERROR: wait_instance would take the ERROR it starts in for a failure.)
    inst = wait_for(
        lambda: (i := rf.instance(uuid)).vm_state == VmState.ACTIVE and not i.task_state and i,
        90,
        f"{uuid} to be rebooted",
    )
    assert inst.host == source
    assert exported_to(rf, vol_id) == [source]
    back = connection(rf, vol_id, source)
    assert domain_volumes(rf, source, uuid) == {vol_id: ("vdb", back["data"]["name"])}
    rf.api.delete(rf.ctx(project), uuid)
    wait_status(rf, vol_id, "available")
    assert exported_to(rf, vol_id) == []
    service(rf).delete(vol_id)
