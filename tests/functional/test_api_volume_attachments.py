"""Nova's volume attachments API, driven by OpenStack's own clients, on a real storage host.

tempest.lib's servers client validates each attach, list, show and detach
answer against Nova's schema for the microversion asked (2.1, 2.70 tag, 2.79
delete_on_termination, 2.89 attachment_id and bdm_uuid without id);
openstacksdk and the ``openstack`` CLI attach and detach, and boot a server
with a data volume in ``block_device_mapping_v2``. Bad input gets Nova's
codes and messages and changes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openstack
import pytest
import requests
from sqlalchemy import func, select, update

from resizeflow.api.microversion import MAX_VERSION
from resizeflow.compute.volumes import BlockDevice
from resizeflow.db.models import StepJournal, Volume, VolumeAttachment
from resizeflow.openstack.images import ImageStore
from resizeflow.states import MigrationStatus, VmState
from tests.functional.test_api_tempest import Clients, at_version, wait_server
from tests.support.clients import volume_endpoint, volume_osc
from tests.support.stack import Stack
from tests.support.volumes import (
    attachment,
    exported_to,
    require_tools,
    service,
    status,
    wait_status,
    wait_volume_ops,
)

pytestmark = pytest.mark.stacks("sqlite-redis", "postgresql-rabbitmq")

MAX = f"{MAX_VERSION[0]}.{MAX_VERSION[1]}"


def at_least(version: str, minor: int) -> bool:
    return int(version.split(".")[1]) >= minor


def boot(c: Clients, name: str, version: str) -> str:
    # networks "none" is a value from 2.37; before, a server without networks gets one.
    extra = {"networks": "none"} if at_least(version, 37) else {}
    body = c.servers.create_server(name=name, flavorRef="1", **extra)
    uuid = str(body["server"]["id"])
    wait_server(c, uuid, "ACTIVE")
    return uuid


def call(rf: Stack, method: str, path: str, token: str, version: str, body: Any = None) -> Any:
    return requests.request(
        method,
        rf.api_endpoint() + path,
        json=body,
        headers={"X-Auth-Token": token, "OpenStack-API-Version": f"compute {version}"},
        timeout=60,
    )


@pytest.mark.parametrize("version", ["2.1", "2.69", "2.70", "2.79", "2.88", "2.89", MAX])
def test_tempest_schemas_validate_attach_list_show_detach(
    rf: Stack, project: str, version: str
) -> None:
    require_tools()
    c = Clients(rf.api_endpoint(), f"alice:{project}")
    vol = service(rf).create(project, "alice", 1)
    with at_version(version):
        uuid = boot(c, "tempest-volumes", version)
        extra: dict[str, Any] = {}
        if at_least(version, 49):
            extra["tag"] = "data"
        if at_least(version, 79):
            extra["delete_on_termination"] = False
        made = c.servers.attach_volume(uuid, volumeId=vol.id, **extra)["volumeAttachment"]
        assert (made["id"], made["volumeId"], made["serverId"], made["device"]) == (
            vol.id,
            vol.id,
            uuid,
            "/dev/vdb",
        )
        wait_volume_ops(rf, uuid)
        wait_status(rf, vol.id, "in-use")
        listed = c.servers.list_volume_attachments(uuid)["volumeAttachments"]
        shown = c.servers.show_volume_attachment(uuid, vol.id)["volumeAttachment"]
        assert listed == [shown]
        att = attachment(rf, vol.id)
        assert att is not None
        if at_least(version, 89):
            assert "id" not in shown
            assert (shown["attachment_id"], shown["bdm_uuid"]) == (att.attachment_id, att.bdm_uuid)
        else:
            assert shown["id"] == vol.id and "attachment_id" not in shown
        assert ("tag" in shown) == at_least(version, 70)
        assert ("delete_on_termination" in shown) == at_least(version, 79)
        server = c.servers.show_server(uuid)["server"]
        assert [v["id"] for v in server["os-extended-volumes:volumes_attached"]] == [vol.id]
        c.servers.detach_volume(uuid, vol.id)
        wait_volume_ops(rf, uuid)
        wait_status(rf, vol.id, "available")
        assert c.servers.list_volume_attachments(uuid)["volumeAttachments"] == []
        assert c.servers.show_server(uuid)["server"]["os-extended-volumes:volumes_attached"] == []
        c.servers.delete_server(uuid)
    rf.quiesce()
    service(rf).delete(vol.id)


def test_openstacksdk_attaches_and_detaches(rf: Stack, project: str) -> None:
    require_tools()
    conn = openstack.connect(
        auth_type="admin_token",
        auth={"endpoint": rf.api_endpoint(), "token": f"alice:{project}"},
        block_storage_endpoint_override=volume_endpoint(rf),
    )
    vol = conn.block_storage.create_volume(size=1, name="sdk-data")
    vol = conn.block_storage.wait_for_status(vol, "available", wait=60)
    server = conn.compute.create_server(name="sdk-vol", flavor_id="1", networks="none")
    server = conn.compute.wait_for_server(server, status="ACTIVE", wait=90, interval=0.2)
    made = conn.compute.create_volume_attachment(server, volume_id=vol.id, tag="sdk")
    assert (made.volume_id, made.device, made.tag) == (vol.id, "/dev/vdb", "sdk")
    vol = conn.block_storage.wait_for_status(vol, "in-use", wait=90)
    assert [a.volume_id for a in conn.compute.volume_attachments(server)] == [vol.id]
    assert [a["server_id"] for a in conn.block_storage.get_volume(vol.id).attachments] == [
        server.id
    ]
    shown = conn.compute.get_server(server.id)
    assert [v["id"] for v in shown.attached_volumes] == [vol.id]
    assert exported_to(rf, vol.id) == [shown.compute_host or rf.instance(server.id).host]

    conn.compute.delete_volume_attachment(server, vol.id)
    vol = conn.block_storage.wait_for_status(vol, "available", wait=90)
    assert list(conn.compute.volume_attachments(server)) == []
    assert exported_to(rf, vol.id) == []
    conn.compute.delete_server(server)
    conn.compute.wait_for_delete(server, wait=90)
    conn.block_storage.delete_volume(vol)


@pytest.mark.stacks("sqlite-redis")
def test_openstack_cli_boots_with_a_volume_and_adds_and_removes_one(
    rf: Stack, project: str, tmp_path: Path
) -> None:
    require_tools()
    token = f"alice:{project}"

    def run(*args: str) -> Any:
        done = volume_osc(rf, *args, token=token)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout) if "-f" in args else done.stdout

    # OSC boots from an image when the only volume it is given is not the boot disk.
    raw = tmp_path / "image.raw"
    raw.write_bytes(b"\0" * 1048576)
    image = ImageStore(rf.settings.images_dir()).add(f"cli-{project}", raw, disk_format="raw")
    boot_vol = run("volume", "create", "--size", "1", "at-boot", "-f", "json")
    later = run("volume", "create", "--size", "1", "later", "-f", "json")
    wait_status(rf, later["id"], "available")
    server = run(
        "server", "create", "--flavor", "1", "--nic", "none", "--wait", "--image", image.id,
        "--block-device",
        f"source_type=volume,uuid={boot_vol['id']},destination_type=volume,boot_index=-1",
        "cli-vol", "-f", "json",
    )  # fmt: skip
    assert server["status"] == "ACTIVE"
    wait_status(rf, boot_vol["id"], "in-use")
    host = rf.instance(server["id"]).host
    assert exported_to(rf, boot_vol["id"]) == [host]

    run("server", "add", "volume", "--device", "/dev/vdc", server["id"], later["id"])
    wait_status(rf, later["id"], "in-use")
    listed = run("server", "volume", "list", server["id"], "-f", "json")
    assert sorted((v["Volume ID"], v["Device"]) for v in listed) == sorted(
        [(boot_vol["id"], "/dev/vdb"), (later["id"], "/dev/vdc")]
    )
    shown = run("server", "show", server["id"], "-f", "json")
    assert {v["id"] for v in shown["volumes_attached"]} == {boot_vol["id"], later["id"]}

    run("server", "remove", "volume", server["id"], later["id"])
    wait_status(rf, later["id"], "available")
    assert exported_to(rf, later["id"]) == []
    run("server", "delete", "--wait", server["id"])
    wait_status(rf, boot_vol["id"], "available")
    assert exported_to(rf, boot_vol["id"]) == []
    run("volume", "delete", boot_vol["id"], later["id"])
    ImageStore(rf.settings.images_dir()).delete(image.id)


def test_bad_input_gets_novas_codes_and_changes_nothing(rf: Stack, project: str) -> None:
    require_tools()
    token = f"alice:{project}"
    vols = service(rf)
    attached, free, broken = (vols.create(project, "alice", 1) for _ in range(3))
    with rf.db.transaction() as s:
        s.execute(update(Volume).where(Volume.id == broken.id).values(status="error"))
    first, second = rf.boot(project), rf.boot(project)
    rf.api.attach_volume(rf.ctx(project), first, BlockDevice(attached.id))
    wait_volume_ops(rf, first)
    wait_status(rf, attached.id, "in-use")

    def attach(server: str, volume_id: str, version: str = MAX) -> Any:
        body = {"volumeAttachment": {"volumeId": volume_id}}
        return call(rf, "POST", f"/servers/{server}/os-volume_attachments", token, version, body)

    def state() -> Any:
        """The volumes' statuses, their attachments, and the servers' volume operations."""
        with rf.db.snapshot() as s:
            rows = s.execute(
                select(
                    VolumeAttachment.volume_id,
                    VolumeAttachment.instance_uuid,
                    VolumeAttachment.attach_status,
                    VolumeAttachment.connected_host,
                ).order_by(VolumeAttachment.id)
            ).all()
            ops = s.scalar(
                select(func.count())
                .select_from(StepJournal)
                .where(StepJournal.flow.in_(("attach_volume", "detach_volume")))
            )
        return [status(rf, v.id) for v in (attached, free, broken)], rows, ops

    before = state()
    missing = "00000000-0000-4000-8000-000000000000"
    cases = [
        (attach(second, attached.id), 400, f"Volume {attached.id} status must be available"),
        (attach(first, attached.id), 400, f"volume {attached.id} already attached"),
        (attach(second, broken.id), 400, "but the current status is error"),
        (attach(second, missing), 404, f"Volume {missing} could not be found."),
        (
            call(rf, "DELETE", f"/servers/{second}/os-volume_attachments/{free.id}", token, MAX),
            404,
            f"Instance {second} is not attached to volume {free.id}",
        ),
        (
            call(rf, "GET", f"/servers/{second}/os-volume_attachments/{free.id}", token, MAX),
            404,
            f"Instance {second} is not attached to volume {free.id}",
        ),
        (
            call(rf, "DELETE", f"/servers/{second}/os-volume_attachments/{missing}", token, MAX),
            404,
            f"Volume {missing} could not be found.",
        ),
        (
            call(
                rf,
                "POST",
                f"/servers/{second}/os-volume_attachments",
                token,
                "2.48",
                {"volumeAttachment": {"volumeId": free.id, "tag": "t"}},
            ),
            400,
            "Additional properties are not allowed ('tag' was unexpected)",
        ),
    ]  # fmt: skip
    for resp, code, message in cases:
        assert resp.status_code == code, resp.text
        assert message in next(iter(resp.json().values()))["message"], resp.text
    assert state() == before

    # A server in a state Nova refuses: in ERROR, or in the middle of a resize.
    rf.api.reset_state(rf.admin(), second, VmState.ERROR)
    resp = attach(second, free.id)
    assert resp.status_code == 409, resp.text
    assert resp.json()["conflictingRequest"]["message"] == (
        f"Cannot 'attach_volume' instance {second} while it is in vm_state error"
    )
    rf.api.reset_state(rf.admin(), second, VmState.ACTIVE)
    # The hold keeps the resize in flight while the two requests are refused; a
    # loaded machine can take seconds over them, so it is generous (the test
    # waits for the resize to finish either way).
    # (This server's prep_resize alone: the stack is shared, and another test's
    # resize still in flight must not take the hold.)
    hold = {"mode": "delay", "seconds": 20, "times": 1, "instance_uuid": first}
    rf.set_failpoints({"resizeflow.resize.prep_resize": [hold]})
    mig_id = rf.api.resize(rf.ctx(project), first, "2")
    for resp, action in (
        (attach(first, free.id), "attach_volume"),
        (
            call(rf, "DELETE", f"/servers/{first}/os-volume_attachments/{attached.id}", token, MAX),
            "detach_volume",
        ),
    ):
        assert resp.status_code == 409, resp.text
        message = resp.json()["conflictingRequest"]["message"]
        assert message.startswith(
            f"Cannot '{action}' instance {first} while it is in task_state resize_"
        )
    # The resize runs on meanwhile and moves the volume's connection to its dest
    # (connected_host) whenever it gets there; what a refused attach or detach
    # would have changed (statuses, attachments, volume operations) must not move.
    statuses, rows, ops = state()
    assert (statuses, [row[:3] for row in rows], ops) == (
        before[0],
        [row[:3] for row in before[1]],
        before[2],
    )
    rf.wait_migration(mig_id, MigrationStatus.FINISHED)
    rf.wait_instance(first, VmState.RESIZED)
    # The resize moved the volume; confirm, then delete both servers.
    rf.api.confirm_resize(rf.ctx(project), first)
    rf.wait_instance(first, VmState.ACTIVE)
    for uuid in (first, second):
        rf.api.delete(rf.ctx(project), uuid)
    rf.quiesce()
    wait_status(rf, attached.id, "available")
    for v in (attached, free, broken):
        with rf.db.transaction() as s:
            s.execute(update(Volume).where(Volume.id == v.id).values(status="available"))
        vols.delete(v.id)


def test_reset_state_lets_a_volume_attach_in_flight_finish(rf: Stack, project: str) -> None:
    """Nova's reset-state sets the server's states and nothing else: an attach
    waiting in the queue of a host whose worker died still attaches when the
    host is back, rather than leave its volume reserved and exported forever."""
    require_tools()
    uuid = rf.boot(project)
    vol = service(rf).create(project, "alice", 1)
    host = rf.instance(uuid).host
    assert host is not None
    rf.kill_worker(host)  # its service still looks up for a while
    try:
        rf.api.attach_volume(rf.ctx(project), uuid, BlockDevice(vol.id))
        rf.api.reset_state(rf.admin(), uuid, VmState.ACTIVE)
    finally:
        rf.start_worker(host)
    wait_status(rf, vol.id, "in-use", timeout=60)
    wait_volume_ops(rf, uuid)
    assert exported_to(rf, vol.id) == [host]
