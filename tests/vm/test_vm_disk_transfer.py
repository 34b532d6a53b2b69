"""Disks crossing between two hosts that share nothing, over SSH, with real guests.

The vm stack's hosts each have their own sshd and instances dir (see
``conftest``), so these resizes copy with rsync over SSH as between two
machines: a worker killed mid-copy of a 1 GiB disk, a dest that cannot be
reached (the resize is rolled back), and a dest whose disk is full.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from resizeflow.compute.workflow_admin import WorkflowAdmin
from resizeflow.db.models import Allocation, ComputeNode
from resizeflow.states import JournalStatus, MigrationStatus
from tests.support.hosts import file_sha256
from tests.support.stack import wait_for
from tests.vm.helpers import GiB, MiB, VmStack, timed

# 1 GiB of random data goes on a 2 GiB ephemeral disk; the resize keeps its size.
EPH = {"id": "rf-eph", "name": "rf.eph", "vcpus": 1, "ram": 128, "disk": 1,
       "OS-FLV-EXT-DATA:ephemeral": 2}  # fmt: skip
EPH_BIG = {"id": "rf-eph-big", "name": "rf.eph.big", "vcpus": 2, "ram": 160, "disk": 1,
           "OS-FLV-EXT-DATA:ephemeral": 2}  # fmt: skip
COPY_TIMEOUT = 300.0


def _project() -> str:
    return f"p-{uuid.uuid4().hex[:8]}"


def _boot_stopped(vm: VmStack, flavor: str) -> tuple[str, str]:
    """A server on vm1 that has booted once (its marker written), now shut off."""
    sid = vm.boot(_project(), "vm1", flavor=flavor)
    vm.wait_status(sid, "ACTIVE")
    (first,) = vm.wait_reports("vm1", sid, 1)
    assert first.marker_written and first.marker
    vm.action(sid, {"os-stop": None})
    vm.wait_status(sid, "SHUTOFF")
    return sid, first.marker


def _write_random(disk: Path, offset: int, size: int, scratch: Path) -> str:
    """Write ``size`` random bytes into a qcow2 disk at ``offset``; their SHA-256."""
    digest = hashlib.sha256()
    with scratch.open("wb") as out:
        for _ in range(size // (4 * MiB)):
            chunk = os.urandom(4 * MiB)
            digest.update(chunk)
            out.write(chunk)
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", f"write -q -s {scratch} {offset} {size}", str(disk)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    scratch.unlink()
    return digest.hexdigest()


def _guest_sha256(disk: Path, offset: int, size: int, scratch: Path) -> str:
    """SHA-256 of what the guest sees in ``disk`` from ``offset``, ``size`` bytes long."""
    subprocess.run(
        ["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(disk), str(scratch)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    digest = hashlib.sha256()
    with scratch.open("rb") as raw:
        raw.seek(offset)
        left = size
        while left:
            chunk = raw.read(min(left, 4 * MiB))
            assert chunk, "the copy is shorter than the data written"
            digest.update(chunk)
            left -= len(chunk)
    scratch.unlink()
    return digest.hexdigest()


def _leftovers(vm: VmStack) -> list[str]:
    """Partial copies and rsync/ssh temporaries anywhere under either host's instances."""
    found = []
    for host in ("vm1", "vm2"):
        root = vm.stack.settings.instances_dir(host)
        found += [str(p) for p in root.rglob("*") if p.name.endswith((".part", ".tmp"))]
    return found


def _copies_running(part: Path) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True)
    return [line for line in out.stdout.splitlines() if str(part) in line and "ps -eo" not in line]


def _sent(log: str, disk: str) -> list[int]:
    """Bytes each finished copy of ``disk`` to vm2 sent, from the source worker's log."""
    return [int(n) for n in re.findall(rf"copied {re.escape(disk)} to vm2: (\d+) bytes sent", log)]


def test_source_worker_killed_mid_copy_of_a_1gib_disk(vm: VmStack, tmp_path: Path) -> None:
    vm.create_flavor(EPH)
    vm.create_flavor(EPH_BIG)
    sid, marker = _boot_stopped(vm, EPH["id"])
    local = vm.inst_dir("vm1", sid) / "disk.local"
    digest = _write_random(local, 0, GiB, tmp_path / "data.bin")

    start = time.monotonic()
    vm.action(sid, {"resize": {"flavorRef": EPH_BIG["id"]}})
    part = vm.inst_dir("vm2", sid) / ".disk.local.part"
    wait_for(
        lambda: part.exists() and part.stat().st_blocks * 512 >= 256 * MiB,
        COPY_TIMEOUT,
        "a quarter of the 1 GiB disk on vm2",
    )

    # A request that locks the server is answered while the copy runs: no
    # row is locked during the hypervisor work. It is refused (the server is
    # resizing), and the copy is still going when the answer arrives.
    with vm.client() as c:
        r = c.post(f"/servers/{sid}/action", json={"os-start": None})
    assert r.status_code == 409, r.text
    assert part.exists() and not (vm.inst_dir("vm2", sid) / "disk.local").exists()
    with vm.client() as c:
        assert c.get(f"/servers/{sid}").json()["server"]["OS-EXT-STS:task_state"] == (
            "resize_migrating"
        )

    vm.stack.local.kill_worker("vm1")
    copied_at_kill = part.stat().st_blocks * 512
    assert copied_at_kill < GiB, "the copy ended before the worker was killed"
    # The copy dies with its worker (PR_SET_PDEATHSIG): nothing writes to
    # the partial file behind the next try's back.
    wait_for(lambda: not _copies_running(part), 10, "the killed worker's rsync to exit")

    vm.stack.local.start_worker("vm1", timeout=90, env=vm.worker_env("vm1"))
    vm.wait_status(sid, "VERIFY_RESIZE", timeout=COPY_TIMEOUT)
    resize_s = timed(start)

    (mig_id,) = vm.migration_ids(sid)
    rows = vm.stack.journal(mig_id)
    assert all(r.status == JournalStatus.DONE and r.applied == 1 for r in rows), rows
    (resize_row,) = [r for r in rows if r.step.endswith("resize_instance")]
    assert resize_row.attempts >= 2
    # rsync resumed the partial copy: the second try sent only what was missing.
    (sent,) = _sent(vm.stack.worker_log("vm1"), "disk.local")
    assert sent <= GiB - copied_at_kill + 64 * MiB, (sent, copied_at_kill)

    dest = vm.inst_dir("vm2", sid) / "disk.local"
    assert _guest_sha256(dest, 0, GiB, tmp_path / "check.raw") == digest
    assert _leftovers(vm) == []

    vm.action(sid, {"confirmResize": None})
    vm.wait_status(sid, "SHUTOFF")
    vm.action(sid, {"os-start": None})
    vm.wait_status(sid, "ACTIVE")
    (after,) = vm.wait_reports("vm2", sid, 1)
    assert after.marker == marker and not after.marker_written
    assert after.nproc == 2
    # Nothing of the instance is left on the source; nothing partial anywhere.
    assert not vm.inst_dir("vm1", sid).exists()
    assert not vm.inst_dir("vm1", sid, "_resize").exists()
    assert _leftovers(vm) == []

    vm.delete(sid)
    vm.wait_gone(sid)
    assert not vm.inst_dir("vm2", sid).exists()
    print(
        f"\n1 GiB resize, source worker killed mid-copy: {resize_s}s;"
        f" the resumed copy sent {sent} bytes"
    )


@pytest.fixture
def vm2_sshd_down(vm: VmStack) -> object:
    host = next(h for h in vm.hosts.hosts if h.name == "vm2")
    host.stop()
    try:
        yield host
    finally:
        host.start()


def test_unreachable_dest_is_retried_then_rolled_back_naming_it(
    vm: VmStack, request: pytest.FixtureRequest
) -> None:
    """The dest is asked before the guest goes down; when it never answers the
    resize is rolled back (Nova's InstanceFaultRollback): the server keeps
    running as it was, the migration errors out and the dest's claim is gone."""
    sid = vm.boot(_project(), "vm1")
    vm.wait_status(sid, "ACTIVE")
    request.getfixturevalue("vm2_sshd_down")
    vm.action(sid, {"resize": {"flavorRef": "rf-big"}})
    (mig_id,) = vm.migration_ids(sid)
    wait_for(lambda: vm.stack.migration(mig_id).status == MigrationStatus.ERROR, 120)
    server = vm.wait_status(sid, "ACTIVE")
    assert server["flavor"]["id"] == "rf-small"
    assert server["OS-EXT-SRV-ATTR:host"] == "vm1" and "fault" not in server
    (step,) = [r for r in vm.stack.journal(mig_id) if r.step.endswith("resize_instance")]
    # Transient: tried once, retried STEP_MAX_RETRIES times, then rolled back.
    assert (step.status, step.attempts) == (JournalStatus.FAILED, 5)
    with vm.client() as c:
        (action,) = [
            a
            for a in c.get(f"/servers/{sid}/os-instance-actions").json()["instanceActions"]
            if a["action"] == "resize"
        ]
        shown = c.get(f"/servers/{sid}/os-instance-actions/{action['request_id']}").json()
    events = {e["event"]: e for e in shown["instanceAction"]["events"]}
    failed = events["compute_resize_instance"]
    assert failed["result"] == "Error"
    assert "Cannot reach host vm2 (127.0.0.12) over SSH" in failed["traceback"]
    assert any("Cannot reach host vm2" in f for f in vm.stack.faults(sid))
    # The guest still runs, in its own dir, and nothing is claimed on vm2.
    assert vm.domain_state("vm1", sid) == "running"
    assert not vm.inst_dir("vm1", sid, "_resize").exists()
    assert not vm.inst_dir("vm2", sid).exists()
    (mig_uuid,) = vm.migration_uuids(sid)
    assert vm.allocations(mig_uuid) == 0
    with vm.stack.db.snapshot() as s:
        on = set(
            s.scalars(
                select(ComputeNode.host)
                .join(Allocation, Allocation.node_id == ComputeNode.id)
                .where(Allocation.consumer_uuid == sid)
            )
        )
    assert on == {"vm1"}
    vm.delete(sid)
    vm.wait_gone(sid)


@pytest.fixture
def small_dest_dir(vm: VmStack) -> object:
    """Mount a 16 MiB tmpfs where vm2 will keep the next instance's disks."""
    mounted: list[Path] = []

    def mount(path: Path) -> None:
        path.mkdir(parents=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(path)], check=True)
        mounted.append(path)

    yield mount
    for path in mounted:
        if os.path.ismount(path):  # the test unmounts it itself when it passes
            subprocess.run(["umount", "-l", str(path)], check=False)


def test_full_dest_disk_fails_for_good_and_a_retry_then_revert_still_work(
    vm: VmStack, tmp_path: Path, small_dest_dir: object
) -> None:
    sid, _ = _boot_stopped(vm, "rf-small")
    # 64 MiB of data in the root overlay, past the guest's own files.
    root = vm.inst_dir("vm1", sid) / "disk"
    _write_random(root, 768 * MiB, 64 * MiB, tmp_path / "d.bin")
    before = file_sha256(root)
    dest_dir = vm.inst_dir("vm2", sid)
    small_dest_dir(dest_dir)  # type: ignore[operator]

    vm.action(sid, {"resize": {"flavorRef": "rf-big"}})
    server = vm.wait_status(sid, "ERROR", timeout=120)
    assert "Not enough space on host vm2" in server["fault"]["message"], server["fault"]
    (mig_id,) = vm.migration_ids(sid)
    (step,) = [r for r in vm.stack.journal(mig_id) if r.step.endswith("resize_instance")]
    assert (step.status, step.attempts) == (JournalStatus.FAILED, 1)  # final: no retry
    # The source keeps _resize; the dest keeps nothing of the copy.
    assert (vm.inst_dir("vm1", sid, "_resize") / "disk").exists()
    assert list(dest_dir.iterdir()) == []

    # Room is made on the dest; the operator resumes the resize, and a revert
    # brings the server back from _resize.
    subprocess.run(["umount", str(dest_dir)], check=True)
    WorkflowAdmin(vm.stack.settings, vm.stack.db, vm.stack.app).retry(vm.stack.admin(), mig_id)
    vm.wait_status(sid, "VERIFY_RESIZE")
    vm.action(sid, {"revertResize": None})
    vm.wait_status(sid, "SHUTOFF")
    assert not vm.inst_dir("vm2", sid).exists()
    # The server is back on its own disk, byte for byte, marker and data.
    assert file_sha256(root) == before
    assert vm.domain_state("vm1", sid) == "shutoff"
    vm.delete(sid)
    vm.wait_gone(sid)
