"""A volume of a real guest carried through resize, revert, confirm and delete, via the API.

The volume is created through the Block Storage API on the stack's storage
host and attached through Nova's volume attachments API to a running test
guest, which writes a record to it every two seconds, tagged with its boot
(see :mod:`resizeflow.devstack.guest`). Each boot reports what it reads back,
so the guest itself says which writes it sees. The storage host's exports say
which hosts can reach the volume: after a resize only the dest, after a
revert only the source, and an NBD client of a host the guest left is refused.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx

from resizeflow.devstack.guest import VOLUME_LOG_SLOT, VolumeReport
from resizeflow.storage.client import RemoteStorage
from tests.support.stack import wait_for
from tests.support.volumes import connection, exported_to, reachable
from tests.vm.helpers import BIG, BOOT, VmStack, wait_volume_report

SERIAL = 20  # a virtio-blk serial holds 20 bytes of the volume id


def _volumes(vm: VmStack, project: str) -> httpx.Client:
    base = vm.stack.api_endpoint().removesuffix("/v2.1")
    return httpx.Client(
        base_url=f"{base}/volume/v3",
        headers={"X-Auth-Token": f"admin:{project}", "OpenStack-API-Version": "volume 3.0"},
        timeout=30.0,
    )


def _volume(vm: VmStack, project: str, volume_id: str) -> dict[str, Any]:
    with _volumes(vm, project) as c:
        r = c.get(f"/volumes/{volume_id}")
        assert r.status_code == 200, r.text
        found: dict[str, Any] = r.json()["volume"]
        return found


def _wait_volume(vm: VmStack, project: str, volume_id: str, status: str) -> dict[str, Any]:
    return wait_for(
        lambda: (v := _volume(vm, project, volume_id))["status"] == status and v,
        BOOT,
        f"volume {volume_id} to be {status}",
    )


def _wait_report(
    vm: VmStack, host: str, sid: str, what: str, match: Any, after: int = 0
) -> tuple[int, VolumeReport]:
    """The first of the guest's volume reports on ``host`` from the ``after``-th on
    that ``match`` accepts, and its index."""
    return wait_volume_report(lambda: vm.volume_reports(host, sid), what, match, after)


def _records_on_storage(vm: VmStack, volume_id: str, tmp: Path) -> tuple[str, dict[str, int]]:
    """The guest's marker and its records per boot, read through a connection of the test's own."""
    storage = RemoteStorage(vm.stack.app, vm.stack.settings.storage_host, timeout=60)
    url = storage.initialize_connection(volume_id, "test-reader").url
    try:
        out = tmp / f"{volume_id}.head"
        count = VOLUME_LOG_SLOT + 512
        subprocess.run(
            ["qemu-img", "dd", "-f", "raw", "-O", "raw", "bs=64", f"count={count}",
             f"if={url}", f"of={out}"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        data = out.read_bytes()
    finally:
        storage.terminate_connection(volume_id, "test-reader")
    header = data[:64].decode().split()
    assert header[0] == "RFVOL", header
    n = int(header[2])
    boots: dict[str, int] = {}
    for i in range(n):
        rec = data[(VOLUME_LOG_SLOT + i) * 64 : (VOLUME_LOG_SLOT + i + 1) * 64].decode().split()
        boots[rec[0]] = boots.get(rec[0], 0) + 1
    return header[1], boots


def test_a_guests_volume_through_resize_revert_confirm_and_delete(
    vm: VmStack, tmp_path: Path
) -> None:
    project = f"p-{uuid.uuid4().hex[:8]}"
    with _volumes(vm, project) as c:
        r = c.post("/volumes", json={"volume": {"size": 1, "name": "vm-data"}})
        assert r.status_code == 202, r.text
        volume_id = r.json()["volume"]["id"]
    _wait_volume(vm, project, volume_id, "available")
    serial = volume_id[:SERIAL]

    sid = vm.boot(project, "vm1")
    vm.wait_status(sid, "ACTIVE")
    with vm.client(project) as c:
        r = c.post(
            f"/servers/{sid}/os-volume_attachments",
            json={"volumeAttachment": {"volumeId": volume_id}},
        )
        assert r.status_code == 200, r.text
        assert r.json()["volumeAttachment"]["device"] == "/dev/vdb"
    _wait_volume(vm, project, volume_id, "in-use")
    assert [v["id"] for v in vm.show(sid)["os-extended-volumes:volumes_attached"]] == [volume_id]
    assert exported_to(vm.stack, volume_id) == ["vm1"]
    on_vm1 = connection(vm.stack, volume_id, "vm1")

    # The guest finds the blank volume (hot-plugged), writes its marker, then records.
    at, seen = _wait_report(vm, "vm1", sid, "the volume seen", lambda r: r.kind == "vol")
    assert (seen.serial, seen.marker_written) == (serial, True), seen
    marker, boot1 = seen.marker, seen.boot
    at, _ = _wait_report(
        vm, "vm1", sid, "records of the first boot", lambda r: r.kind == "vollog"
        and r.boots == ((boot1, 2),), at,
    )  # fmt: skip

    # Resize: the guest on vm2 (a new boot) finds the same volume and what it wrote.
    vm.action(sid, {"resize": {"flavorRef": BIG["id"]}})
    vm.wait_status(sid, "VERIFY_RESIZE")
    assert vm.show(sid)["OS-EXT-SRV-ATTR:host"] == "vm2"
    assert exported_to(vm.stack, volume_id) == ["vm2"]
    assert not reachable(on_vm1)  # vm1's export is gone: a client of it is refused
    on_vm2 = connection(vm.stack, volume_id, "vm2")
    _, seen = _wait_report(
        vm, "vm2", sid, "the volume on vm2", lambda r: r.kind == "vol" and r.boot != boot1
    )
    assert (seen.serial, seen.marker, seen.marker_written) == (serial, marker, False), seen
    boot2 = seen.boot
    # The guest writes more while the resize awaits confirmation.
    _, logged = _wait_report(
        vm, "vm2", sid, "two records of the boot on vm2", lambda r: r.kind == "vollog"
        and dict(r.boots).get(boot2, 0) >= 2,
    )  # fmt: skip
    first_boot_records = dict(logged.boots)[boot1]
    assert logged.boots[0] == (boot1, first_boot_records), logged
    assert first_boot_records >= 2

    # Revert: the guest is back on vm1 (a third boot) and sees both boots' writes.
    vm.action(sid, {"revertResize": None})
    vm.wait_status(sid, "ACTIVE")
    assert vm.show(sid)["OS-EXT-SRV-ATTR:host"] == "vm1"
    assert exported_to(vm.stack, volume_id) == ["vm1"]
    assert not reachable(on_vm2)
    _, logged = _wait_report(
        vm, "vm1", sid, "the boot after the revert reading both writes",
        # (Only a boot after the revert has three boots' records to read back.)
        lambda r: r.kind == "vollog" and len(r.boots) >= 3 and r.boots[0][0] == boot1,
    )  # fmt: skip
    assert logged.boots[0] == (boot1, first_boot_records), logged
    assert logged.boots[1][0] == boot2 and logged.boots[1][1] >= 2, logged
    boot3 = logged.boots[2][0]

    # Resize again and confirm: the volume stays with vm2 only.
    vm.action(sid, {"resize": {"flavorRef": BIG["id"]}})
    vm.wait_status(sid, "VERIFY_RESIZE")
    vm.action(sid, {"confirmResize": None})
    vm.wait_status(sid, "ACTIVE")
    assert vm.show(sid)["OS-EXT-SRV-ATTR:host"] == "vm2"
    assert exported_to(vm.stack, volume_id) == ["vm2"]
    _, logged = _wait_report(
        vm, "vm2", sid, "the boot after the confirm writing",
        lambda r: r.kind == "vollog" and len(r.boots) >= 4 and r.boots[-1][1] >= 1,
    )  # fmt: skip
    assert [b for b, _ in logged.boots[:3]] == [boot1, boot2, boot3], logged

    # Delete: the volume is available, with every boot's records on it.
    vm.delete(sid)
    vm.wait_gone(sid)
    _wait_volume(vm, project, volume_id, "available")
    assert _volume(vm, project, volume_id)["attachments"] == []
    assert exported_to(vm.stack, volume_id) == []
    on_storage, boots = _records_on_storage(vm, volume_id, tmp_path)
    assert on_storage == marker
    assert list(boots)[:3] == [boot1, boot2, boot3] and len(boots) >= 4
    assert boots[boot1] == first_boot_records
    with _volumes(vm, project) as c:
        assert c.delete(f"/volumes/{volume_id}").status_code == 202
