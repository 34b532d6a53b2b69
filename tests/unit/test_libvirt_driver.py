"""LibvirtDriver against the real libvirt test driver, in tmp_path instance dirs.

``test:///default`` shares one state per process, so most tests open
``test://<abs path to a node XML>`` instead: every open of such a URI gets its
own private state, which models separate compute hosts (and a worker restart
when a fresh driver opens it again).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path, PurePosixPath

import pytest

from resizeflow.errors import (
    ConfigError,
    DiskNotFound,
    InstanceNotFound,
    InvalidUUID,
    TransientError,
)
from resizeflow.states import PowerState
from resizeflow.virt.base import InstanceSpec, PeerHost
from resizeflow.virt.libvirt import MAX_CONSOLE_BYTES, GiB, LibvirtDriver

NODE_XML = """<node>
  <cpu><mhz>2000</mhz><model>x</model><topology sockets='1' cores='2' threads='2'/>
    <active>4</active><total>4</total></cpu>
  <memory>8388608</memory>
</node>
"""
MARK = b"resizeflow-data"
MARK_AT = 100 * 1024**2

MakeDriver = Callable[[str], LibvirtDriver]


def peer(drv: LibvirtDriver) -> PeerHost:
    """A driver's host as another host's disk move reaches it (the local transport)."""
    return PeerHost(drv.hostname, drv.hostname, PurePosixPath(drv.instances_dir))


@pytest.fixture
def node_uri(tmp_path: Path) -> str:
    node = tmp_path / "node.xml"
    node.write_text(NODE_XML)
    return f"test://{node}"


@pytest.fixture
def make_driver(tmp_path: Path, node_uri: str) -> MakeDriver:
    def make(host: str) -> LibvirtDriver:
        return LibvirtDriver(node_uri, tmp_path / host / "instances", hostname=host)

    return make


@pytest.fixture
def old() -> InstanceSpec:
    return InstanceSpec(uuid=str(uuid.uuid4()), vcpus=1, memory_mb=512, root_gb=1)


@pytest.fixture
def new(old: InstanceSpec) -> InstanceSpec:
    return replace(old, vcpus=2, memory_mb=1024, root_gb=2)


def write_mark(disk: Path) -> None:
    with disk.open("r+b") as f:
        f.seek(MARK_AT)
        f.write(MARK)


def read_mark(disk: Path) -> bytes:
    with disk.open("rb") as f:
        f.seek(MARK_AT)
        return f.read(len(MARK))


def is_sparse(disk: Path) -> bool:
    st = os.stat(disk)
    return st.st_blocks * 512 < st.st_size // 2


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def flavor(drv: LibvirtDriver, inst: InstanceSpec) -> tuple[int, int]:
    (info,) = [d for d in drv.list_domains() if d.uuid == inst.uuid]
    return info.vcpus, info.memory_mb


def test_custom_node_uri_gives_each_open_private_state(
    make_driver: MakeDriver, old: InstanceSpec
) -> None:
    a, b = make_driver("a"), make_driver("b")
    a.spawn(old, power_on=True)
    assert a.power_state(old.uuid) == PowerState.RUNNING
    assert b.power_state(old.uuid) == PowerState.NOSTATE
    assert b.list_domains() == []


def test_spawn_power_state_and_power_cycle(make_driver: MakeDriver, old: InstanceSpec) -> None:
    drv = make_driver("c1")
    drv.spawn(old, power_on=True)
    inst_dir = drv.instances_dir / old.uuid
    disk = inst_dir / "disk"
    assert disk.stat().st_size == GiB
    assert is_sparse(disk)
    xml = (inst_dir / "libvirt.xml").read_text()
    assert f"<name>{old.domain_name}</name>" in xml
    assert str(disk) in xml
    assert drv.power_state(old.uuid) == PowerState.RUNNING
    (info,) = drv.list_domains()
    assert (info.name, info.uuid, info.power_state) == (
        old.domain_name,
        old.uuid,
        PowerState.RUNNING,
    )
    assert flavor(drv, old) == (1, 512)

    drv.power_off(old)
    assert drv.power_state(old.uuid) == PowerState.SHUTDOWN
    drv.power_off(old)  # not running: ignored
    drv.power_on(old)
    drv.power_on(old)  # already running: ignored
    assert drv.power_state(old.uuid) == PowerState.RUNNING
    assert drv.power_state(str(uuid.uuid4())) == PowerState.NOSTATE


def test_spawn_powered_off_and_twice(make_driver: MakeDriver, old: InstanceSpec) -> None:
    drv = make_driver("c1")
    drv.spawn(old, power_on=False)
    write_mark(drv.instances_dir / old.uuid / "disk")
    drv.spawn(old, power_on=False)
    assert drv.power_state(old.uuid) == PowerState.SHUTDOWN
    assert read_mark(drv.instances_dir / old.uuid / "disk") == MARK
    assert tree(drv.instances_dir) == [old.uuid, f"{old.uuid}/disk", f"{old.uuid}/libvirt.xml"]
    assert len(drv.list_domains()) == 1


def test_cross_host_resize_and_confirm(
    make_driver: MakeDriver, old: InstanceSpec, new: InstanceSpec
) -> None:
    src, dst = make_driver("src"), make_driver("dst")
    src.spawn(old, power_on=True)
    write_mark(src.instances_dir / old.uuid / "disk")

    for _ in range(2):
        src.migrate_disk_and_power_off(new, peer(dst))
        assert src.power_state(old.uuid) == PowerState.SHUTDOWN
        assert tree(src.instances_dir) == [
            f"{old.uuid}_resize",
            f"{old.uuid}_resize/console.log",
            f"{old.uuid}_resize/disk",
            f"{old.uuid}_resize/libvirt.xml",
        ]
        assert tree(dst.instances_dir) == [old.uuid, f"{old.uuid}/disk"]
    copy = dst.instances_dir / old.uuid / "disk"
    assert copy.stat().st_size == GiB
    assert read_mark(copy) == MARK
    assert is_sparse(copy)

    for _ in range(2):
        dst.finish_migration(new, power_on=True)
        assert dst.power_state(old.uuid) == PowerState.RUNNING
        assert copy.stat().st_size == 2 * GiB
        assert flavor(dst, new) == (2, 1024)
    assert len(dst.list_domains()) == 1

    # A redelivered migrate after finish must not re-copy over the grown disk.
    src.migrate_disk_and_power_off(new, peer(dst))
    assert copy.stat().st_size == 2 * GiB

    for _ in range(2):
        src.confirm_migration(old, same_host=False)
        assert not (src.instances_dir / f"{old.uuid}_resize").exists()
        assert src.power_state(old.uuid) == PowerState.NOSTATE
        assert src.list_domains() == []
        assert dst.power_state(old.uuid) == PowerState.RUNNING
    assert read_mark(copy) == MARK


def test_same_host_resize_and_confirm(
    make_driver: MakeDriver, old: InstanceSpec, new: InstanceSpec
) -> None:
    drv = make_driver("c1")
    drv.spawn(old, power_on=True)
    write_mark(drv.instances_dir / old.uuid / "disk")

    for _ in range(2):
        drv.migrate_disk_and_power_off(new, peer(drv))
    assert drv.power_state(old.uuid) == PowerState.SHUTDOWN
    assert read_mark(drv.instances_dir / f"{old.uuid}_resize" / "disk") == MARK
    assert read_mark(drv.instances_dir / old.uuid / "disk") == MARK

    for _ in range(2):
        drv.finish_migration(new, power_on=True)
    for _ in range(2):
        drv.confirm_migration(new, same_host=True)
        assert drv.power_state(old.uuid) == PowerState.RUNNING
        assert flavor(drv, new) == (2, 1024)
    assert tree(drv.instances_dir) == [
        old.uuid,
        f"{old.uuid}/console.log",
        f"{old.uuid}/disk",
        f"{old.uuid}/libvirt.xml",
    ]
    assert (drv.instances_dir / old.uuid / "disk").stat().st_size == 2 * GiB
    assert len(drv.list_domains()) == 1


def test_cross_host_revert(make_driver: MakeDriver, old: InstanceSpec, new: InstanceSpec) -> None:
    src, dst = make_driver("src"), make_driver("dst")
    src.spawn(old, power_on=True)
    write_mark(src.instances_dir / old.uuid / "disk")
    src.migrate_disk_and_power_off(new, peer(dst))
    dst.finish_migration(new, power_on=True)

    for _ in range(2):
        dst.destroy(new, destroy_disks=True)
        assert dst.power_state(old.uuid) == PowerState.NOSTATE
        assert tree(dst.instances_dir) == []

    for _ in range(2):
        src.finish_revert_migration(old, power_on=False)
        assert src.power_state(old.uuid) == PowerState.SHUTDOWN
        assert tree(src.instances_dir) == [
            old.uuid,
            f"{old.uuid}/console.log",
            f"{old.uuid}/disk",
            f"{old.uuid}/libvirt.xml",
        ]
        assert flavor(src, old) == (1, 512)
    disk = src.instances_dir / old.uuid / "disk"
    assert disk.stat().st_size == GiB
    assert read_mark(disk) == MARK

    src.finish_revert_migration(old, power_on=True)
    assert src.power_state(old.uuid) == PowerState.RUNNING
    assert len(src.list_domains()) == 1


def test_same_host_revert_removes_leftover_copy(
    make_driver: MakeDriver, old: InstanceSpec, new: InstanceSpec
) -> None:
    drv = make_driver("c1")
    drv.spawn(old, power_on=True)
    drv.migrate_disk_and_power_off(new, peer(drv))
    drv.finish_migration(new, power_on=True)
    assert (drv.instances_dir / old.uuid / "disk").stat().st_size == 2 * GiB

    for _ in range(2):
        drv.finish_revert_migration(old, power_on=True)
        assert drv.power_state(old.uuid) == PowerState.RUNNING
        assert flavor(drv, old) == (1, 512)
        assert len(drv.list_domains()) == 1
    assert not (drv.instances_dir / f"{old.uuid}_resize").exists()
    assert (drv.instances_dir / old.uuid / "disk").stat().st_size == GiB


def test_missing_disks_raise_disk_not_found(
    make_driver: MakeDriver, old: InstanceSpec, new: InstanceSpec
) -> None:
    drv = make_driver("c1")
    with pytest.raises(DiskNotFound):
        drv.finish_migration(new, power_on=True)
    with pytest.raises(DiskNotFound):
        drv.finish_revert_migration(old, power_on=True)
    with pytest.raises(DiskNotFound):
        drv.migrate_disk_and_power_off(new, peer(drv))
    assert drv.power_state(old.uuid) == PowerState.NOSTATE


def test_destroy_keeps_or_removes_disks(make_driver: MakeDriver, old: InstanceSpec) -> None:
    drv = make_driver("c1")
    drv.spawn(old, power_on=True)
    for _ in range(2):
        drv.destroy(old, destroy_disks=False)
        assert drv.power_state(old.uuid) == PowerState.NOSTATE
        assert (drv.instances_dir / old.uuid / "disk").exists()
    for _ in range(2):
        drv.destroy(old, destroy_disks=True)
        assert not (drv.instances_dir / old.uuid).exists()


def test_recover_redefines_from_instance_dirs(
    tmp_path: Path, node_uri: str, make_driver: MakeDriver, new: InstanceSpec
) -> None:
    drv = make_driver("c1")
    other = make_driver("c2")
    a, b = (InstanceSpec(str(uuid.uuid4()), 1, 256, 1) for _ in range(2))
    resized = new  # a same-host resize awaiting confirm
    moved = InstanceSpec(str(uuid.uuid4()), 1, 256, 1)  # cross-host source awaiting confirm
    drv.spawn(a, power_on=True)
    drv.spawn(b, power_on=False)
    drv.spawn(replace(resized, vcpus=1, memory_mb=512, root_gb=1), power_on=True)
    drv.migrate_disk_and_power_off(resized, peer(drv))
    drv.finish_migration(resized, power_on=True)
    drv.spawn(moved, power_on=True)
    drv.migrate_disk_and_power_off(moved, peer(other))
    (drv.instances_dir / "not-a-uuid").mkdir()
    (drv.instances_dir / "junk_resize").mkdir()
    (drv.instances_dir / "stray-file").write_text("x")

    # A fresh driver opens a fresh private state: the worker restart case.
    fresh = LibvirtDriver(node_uri, tmp_path / "c1" / "instances", hostname="c1")
    assert fresh.list_domains() == []
    running = {a.uuid: True, b.uuid: False, resized.uuid: True, moved.uuid: False}
    defined = fresh.recover(running)

    assert sorted(defined) == sorted([a.uuid, b.uuid, resized.uuid, moved.uuid])
    assert len(defined) == 4
    assert fresh.power_state(a.uuid) == PowerState.RUNNING
    assert fresh.power_state(b.uuid) == PowerState.SHUTDOWN
    assert fresh.power_state(resized.uuid) == PowerState.RUNNING
    assert flavor(fresh, resized) == (2, 1024)  # the current dir won over _resize
    assert fresh.power_state(moved.uuid) == PowerState.SHUTDOWN
    assert len(fresh.list_domains()) == 4

    assert sorted(fresh.recover(running)) == sorted(defined)
    assert len(fresh.list_domains()) == 4
    assert fresh.power_state(a.uuid) == PowerState.RUNNING


def test_recover_on_missing_instances_dir(make_driver: MakeDriver) -> None:
    assert make_driver("empty").recover({}) == []


SOME = "abcdef01-2345-4678-9abc-def012345678"
BAD_IDS = [
    "../etc",
    "x/../../y",
    "/etc/passwd",
    "/tmp",
    "",
    "..",
    f"{SOME}/../../x",
    f"../{SOME}",
    f"{SOME}_resize",
    SOME.upper(),
    "{" + SOME + "}",
    SOME.replace("-", ""),
]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_path_traversal_is_rejected(tmp_path: Path, make_driver: MakeDriver, bad: str) -> None:
    drv = make_driver("c1")
    inst = InstanceSpec(uuid=bad, vcpus=1, memory_mb=256, root_gb=1)
    before = tree(tmp_path)
    calls: list[Callable[[], object]] = [
        lambda: drv.spawn(inst, power_on=True),
        lambda: drv.power_state(bad),
        lambda: drv.power_off(inst),
        lambda: drv.power_on(inst),
        lambda: drv.migrate_disk_and_power_off(
            inst, PeerHost("dst", "dst", PurePosixPath(tmp_path / "dst"))
        ),
        lambda: drv.finish_migration(inst, power_on=True),
        lambda: drv.confirm_migration(inst, same_host=False),
        lambda: drv.destroy(inst, destroy_disks=True),
        lambda: drv.finish_revert_migration(inst, power_on=True),
    ]
    for call in calls:
        with pytest.raises(InvalidUUID):
            call()
    assert tree(tmp_path) == before
    assert drv.list_domains() == []


def test_default_uri_ignores_builtin_domain_and_reports_node(
    tmp_path: Path, old: InstanceSpec
) -> None:
    drv = LibvirtDriver("test:///default", tmp_path / "instances", hostname="compute-9")
    try:
        drv.spawn(old, power_on=True)
        assert [d.uuid for d in drv.list_domains()] == [old.uuid]
        res = drv.node_resources()
        assert res.hypervisor_hostname == "compute-9"
        # Nova's fake driver's inventory, not the test driver's 3 GiB pretend host.
        assert (res.vcpus, res.memory_mb, res.local_gb) == (100000, 800000000, 600000)
    finally:
        drv.destroy(old, destroy_disks=True)
    assert drv.power_state(old.uuid) == PowerState.NOSTATE


def test_node_resources_from_custom_node(make_driver: MakeDriver) -> None:
    res = make_driver("c1").node_resources()
    assert (res.hypervisor_hostname, res.vcpus, res.memory_mb) == ("c1", 4, 8192)


def test_connection_failure_is_transient_and_retried(tmp_path: Path) -> None:
    uri = f"qemu+unix:///system?socket={tmp_path}/missing.sock"
    drv = LibvirtDriver(uri, tmp_path / "instances", hostname="c1", virt_type="qemu")
    for _ in range(2):  # each call tries a new connection rather than caching a failure
        with pytest.raises(TransientError):
            drv.node_resources()


def test_virt_type_defaults_from_uri(tmp_path: Path) -> None:
    assert LibvirtDriver("test:///default", tmp_path, hostname="h").virt_type == "test"
    # RESIZEFLOW_VIRT_TYPE wins; without it a qemu URI is detected on first use.
    assert LibvirtDriver("qemu:///system", tmp_path, hostname="h", virt_type="qemu").real
    assert LibvirtDriver("xen:///", tmp_path, hostname="h", virt_type="xen").virt_type == "xen"
    with pytest.raises(ConfigError):
        LibvirtDriver("xen:///", tmp_path, hostname="h")


def test_threads_share_one_lazily_opened_connection(make_driver: MakeDriver) -> None:
    drv = make_driver("c1")
    specs = [InstanceSpec(str(uuid.uuid4()), 1, 256, 1) for _ in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda s: drv.spawn(s, power_on=True), specs))
    # One connection means one private test-driver state holding all eight domains.
    assert sorted(d.uuid for d in drv.list_domains()) == sorted(s.uuid for s in specs)
    assert all(drv.power_state(s.uuid) == PowerState.RUNNING for s in specs)


def test_console_log_is_the_end_of_the_log_and_its_rotations(
    make_driver: MakeDriver, old: InstanceSpec
) -> None:
    drv = make_driver("c1")
    with pytest.raises(InstanceNotFound):
        drv.console_output(old.uuid)  # no domain on this host
    drv.spawn(old, power_on=True)
    drv.power_off(old)
    log = drv.instances_dir / old.uuid / "console.log"
    assert drv.console_output(old.uuid) == log.read_bytes()
    assert log.read_text().splitlines() == [
        f"{old.domain_name} started on c1: 1 vCPU, 512 MiB",
        f"{old.domain_name} stopped on c1: 1 vCPU, 512 MiB",
    ]
    # Nova reads at most 100 KiB, newest last, through the files rotated away.
    log.write_bytes(b"x" * (60 * 1024) + b"\nnewest\n")
    log.with_name("console.log.0").write_bytes(b"older\n" + b"y" * (60 * 1024))
    out = drv.console_output(old.uuid)
    assert len(out) == MAX_CONSOLE_BYTES and out.endswith(b"\nnewest\n")
    assert out.startswith(b"y") and b"older" not in out
    log.unlink()
    log.with_name("console.log.0").unlink()
    assert drv.console_output(old.uuid) == b""  # nothing written yet


def test_reboots_and_a_hard_reboot_takes_its_disks_back(
    make_driver: MakeDriver, old: InstanceSpec
) -> None:
    drv = make_driver("c1")
    drv.spawn(old, power_on=True)
    write_mark(drv.instances_dir / old.uuid / "disk")
    drv.reboot(old, hard=False)
    assert drv.power_state(old.uuid) == PowerState.RUNNING
    drv.power_off(old)
    drv.reboot(old, hard=True)  # starts a stopped domain
    assert drv.power_state(old.uuid) == PowerState.RUNNING
    lines = (drv.instances_dir / old.uuid / "console.log").read_text().splitlines()
    # spawn; the soft reboot's stop and start; the power off; the hard reboot's start
    assert [line.split()[1] for line in lines] == [
        "started",
        "stopped",
        "started",
        "stopped",
        "started",
    ]
    # A revert that failed before renaming the dir back: the domain is gone, its
    # disks are in <uuid>_resize; a hard reboot defines it again from them.
    drv.destroy(old, destroy_disks=False)
    (drv.instances_dir / old.uuid).rename(drv.instances_dir / f"{old.uuid}_resize")
    bigger = replace(old, vcpus=2)
    drv.reboot(bigger, hard=True)
    assert drv.power_state(old.uuid) == PowerState.RUNNING
    assert flavor(drv, old) == (2, 512)  # defined from what it was given
    assert read_mark(drv.instances_dir / old.uuid / "disk") == MARK
    assert not (drv.instances_dir / f"{old.uuid}_resize").exists()
    # Nothing at all to boot from is a hypervisor error, not a blank disk.
    drv.destroy(old, destroy_disks=True)
    with pytest.raises(DiskNotFound):
        drv.reboot(old, hard=True)
