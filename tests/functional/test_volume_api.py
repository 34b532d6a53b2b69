"""Cinder's Block Storage v3 API of ``resizeflow api``, driven by OpenStack's own clients.

openstacksdk's ``block_storage`` proxy finds v3 through the version document
at ``/volume/``, then creates, lists, shows, updates and deletes volumes; the
``openstack volume`` CLI does the same. The attachments API moves a volume
through Cinder's statuses with a real storage host behind it: the
``connection_info`` it answers is an NBD export QEMU's tools write through.
Bad input gets Cinder's codes and messages, and changes nothing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import openstack
import pytest
import requests
from openstack.connection import Connection

from resizeflow.api import volume_version
from resizeflow.db.models import Volume
from resizeflow.openstack.cinder import VolumeService, volume_service
from resizeflow.storage.base import ConnectionInfo
from tests.support.clients import volume_endpoint, volume_osc
from tests.support.stack import Stack
from tests.support.volumes import reachable

pytestmark = [
    pytest.mark.stacks("sqlite-redis", "postgresql-rabbitmq"),
    pytest.mark.skipif(
        shutil.which("qemu-storage-daemon") is None or shutil.which("qemu-io") is None,
        reason="needs qemu-storage-daemon and qemu-io (Debian qemu-system-common, qemu-utils)",
    ),
]
ATTACH = {"OpenStack-API-Version": "volume 3.44"}


def connect(rf: Stack, token: str) -> Connection:
    # The compute endpoint is the admin_token's; block storage is found at its own path.
    return openstack.connect(
        auth_type="admin_token",
        auth={"endpoint": rf.api_endpoint(), "token": token},
        block_storage_endpoint_override=volume_endpoint(rf),
    )


def call(
    rf: Stack,
    method: str,
    path: str,
    token: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> requests.Response:
    return requests.request(
        method,
        volume_endpoint(rf) + "v3" + path,
        json=body,
        headers={"X-Auth-Token": token, **(headers or {})},
        timeout=60,
    )


def service(rf: Stack) -> VolumeService:
    """The service Nova's side calls in-process, on the stack's storage host."""
    return volume_service(rf.settings, rf.db, rf.app)


def qemu_io(info: dict[str, Any], command: str) -> str:
    done = subprocess.run(
        ["qemu-io", "-f", "raw", ConnectionInfo.from_dict(info).url, "-c", command],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout + done.stderr


def volume_rows(rf: Stack) -> list[tuple[str, str, str]]:
    with rf.db.snapshot() as s:
        return [(v.id, v.status, v.attach_status) for v in s.query(Volume).order_by(Volume.id)]


def test_sdk_discovers_v3_and_manages_volumes(rf: Stack, project: str) -> None:
    conn = connect(rf, f"alice:{project}")
    data = conn.block_storage.get_endpoint_data()
    assert tuple(data.max_microversion) == volume_version.MAX_VERSION
    assert data.url.endswith("/volume/v3/")

    vol = conn.block_storage.create_volume(size=1, name="data", description="first")
    vol = conn.block_storage.wait_for_status(vol, "available", wait=60)
    assert (vol.size, vol.name, vol.description, vol.is_bootable) == (1, "data", "first", False)
    assert [v.id for v in conn.block_storage.volumes(details=False)] == [vol.id]
    assert [v.status for v in conn.block_storage.volumes()] == ["available"]
    assert [v.id for v in conn.block_storage.volumes(name="data")] == [vol.id]
    assert list(conn.block_storage.volumes(name="other")) == []
    assert list(conn.block_storage.volumes(status="in-use")) == []

    conn.block_storage.update_volume(vol, name="renamed", description="second")
    shown = conn.block_storage.get_volume(vol.id)
    assert (shown.name, shown.description) == ("renamed", "second")

    # Cinder's URLs name the project; the same volumes are found there.
    in_project = call(rf, "GET", f"/{project}/volumes/detail", f"alice:{project}")
    assert [v["id"] for v in in_project.json()["volumes"]] == [vol.id]

    other = connect(rf, f"mallory:{project}-other")
    with pytest.raises(openstack.exceptions.NotFoundException):
        other.block_storage.get_volume(vol.id)
    assert list(other.block_storage.volumes()) == []

    conn.block_storage.delete_volume(vol)
    conn.block_storage.wait_for_delete(vol, wait=60)
    assert list(conn.block_storage.volumes()) == []
    with pytest.raises(openstack.exceptions.NotFoundException):
        conn.block_storage.get_volume(vol.id)


def test_bad_input_gets_cinders_codes_and_changes_nothing(rf: Stack, project: str) -> None:
    token = f"alice:{project}"
    before = volume_rows(rf)
    cases = [
        ({"volume": {"size": 0}}, 400, "Invalid input for field/attribute size. Value: 0."),
        ({"volume": {"size": "big"}}, 400, "Invalid input for field/attribute size."),
        ({"volume": {"name": "no size"}}, 400, "'size' is a required property"),
        ({"volume": {"size": 1, "name": "x" * 256}}, 400, "is too long"),
        ({"volume": {"size": 1, "snapshot_id": "abc"}}, 400, "snapshot_id is not supported"),
        ({"size": 1}, 400, "Missing required element 'volume' in request body."),
    ]
    for body, code, message in cases:
        resp = call(rf, "POST", "/volumes", token, body)
        assert resp.status_code == code, (body, resp.text)
        assert message in resp.json()["badRequest"]["message"], resp.text

    # Larger than the storage host's free space: refused at once, nothing recorded.
    resp = call(rf, "POST", "/volumes", token, {"volume": {"size": 10**7, "name": "huge"}})
    assert resp.status_code == 413, resp.text
    fault = resp.json()["overLimit"]
    assert fault["code"] == 413 and "larger than the free space" in fault["message"]

    missing = "00000000-0000-4000-8000-000000000000"
    for method in ("GET", "DELETE"):
        resp = call(rf, method, f"/volumes/{missing}", token)
        assert resp.status_code == 404, resp.text
        assert resp.json()["itemNotFound"]["message"] == f"Volume {missing} could not be found."
    resp = call(rf, "PUT", f"/volumes/{missing}", token, {"volume": {"name": "n"}})
    assert resp.status_code == 404
    assert volume_rows(rf) == before

    resp = call(rf, "GET", "/attachments", token)  # 3.0: no attachments API yet
    assert resp.status_code == 404
    resp = call(rf, "GET", "/volumes", token, headers={"OpenStack-API-Version": "volume 3.99"})
    assert resp.status_code == 406
    assert "Minimum is 3.0 and maximum is 3.60" in resp.text


def test_attachments_move_the_volume_through_cinders_statuses(rf: Stack, project: str) -> None:
    token = f"alice:{project}"
    server = rf.boot(project)
    conn = connect(rf, token)
    vol = conn.block_storage.wait_for_status(
        conn.block_storage.create_volume(size=1, name="attached"), "available", wait=60
    )

    def status() -> str:
        return str(call(rf, "GET", f"/volumes/{vol.id}", token).json()["volume"]["status"])

    resp = call(
        rf,
        "POST",
        "/attachments",
        token,
        {"attachment": {"volume_uuid": vol.id, "instance_uuid": server}},
        ATTACH,
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["OpenStack-API-Version"] == "volume 3.44"
    att = resp.json()["attachment"]
    assert (att["status"], att["instance"], att["connection_info"]) == ("reserved", server, None)
    assert status() == "reserved"

    # A second reserve for another server is refused; the volume stays reserved.
    other = rf.boot(project)
    resp = call(
        rf,
        "POST",
        "/attachments",
        token,
        {"attachment": {"volume_uuid": vol.id, "instance_uuid": other}},
        ATTACH,
    )
    assert resp.status_code == 400
    assert "must be available to reserve" in resp.json()["badRequest"]["message"]
    assert status() == "reserved"
    for bad, message in (
        ({"volume_uuid": "nope", "instance_uuid": other}, "'nope' is not a 'uuid'"),
        ({"volume_uuid": vol.id, "instance_uuid": other, "mode": "ro"}, "attach mode ro"),
    ):
        resp = call(rf, "POST", "/attachments", token, {"attachment": bad}, ATTACH)
        assert resp.status_code == 400 and message in resp.text, resp.text
    assert status() == "reserved"
    assert len(call(rf, "GET", "/attachments", token, headers=ATTACH).json()["attachments"]) == 1

    connector = {"host": "host1", "mountpoint": "/dev/vdb"}
    resp = call(
        rf,
        "PUT",
        f"/attachments/{att['id']}",
        token,
        {"attachment": {"connector": connector}},
        ATTACH,
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["attachment"]["status"] == "attaching"
    info = resp.json()["attachment"]["connection_info"]
    assert info["driver_volume_type"] == "nbd"
    assert set(info["data"]) == {"host", "port", "name", "volume_id", "access_mode"}
    assert (info["data"]["volume_id"], info["data"]["access_mode"]) == (vol.id, "rw")
    assert info["data"]["port"] == rf.settings.storage_port
    assert status() == "attaching"
    assert "wrote 65536/65536" in qemu_io(info, "write -P 0xab 0 64k")

    # A repeated update answers the same connection, and makes no second one.
    again = call(
        rf,
        "PUT",
        f"/attachments/{att['id']}",
        token,
        {"attachment": {"connector": connector}},
        ATTACH,
    )
    assert again.json()["attachment"]["connection_info"] == info
    assert service(rf).connections(vol.id) == ["host1"]

    resp = call(
        rf, "POST", f"/attachments/{att['id']}/action", token, {"os-complete": None}, ATTACH
    )
    assert resp.status_code == 204, resp.text
    done = call(rf, "GET", f"/attachments/{att['id']}", token, headers=ATTACH).json()
    assert (done["attachment"]["status"], done["attachment"]["connection_info"]) == (
        "attached",
        info,
    )
    shown = call(rf, "GET", f"/volumes/{vol.id}", token).json()["volume"]
    assert shown["status"] == "in-use"
    assert [(a["server_id"], a["device"]) for a in shown["attachments"]] == [(server, "/dev/vdb")]
    assert service(rf).get(vol.id).attach_status == "attached"
    # The list shows each volume with its own attachments, as one volume's show does.
    spare = conn.block_storage.create_volume(size=1, name="spare")
    listed = call(rf, "GET", "/volumes/detail", token).json()["volumes"]
    assert {v["id"]: v["attachments"] for v in listed} == {
        vol.id: shown["attachments"],
        spare.id: [],
    }
    conn.block_storage.delete_volume(spare)

    resp = call(rf, "DELETE", f"/volumes/{vol.id}", token)
    assert resp.status_code == 400
    assert resp.json()["badRequest"]["message"].startswith("Invalid volume: Volume status must be")
    assert status() == "in-use"

    resp = call(rf, "DELETE", f"/attachments/{att['id']}", token, headers=ATTACH)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"attachments": []}
    assert status() == "available"
    assert service(rf).get(vol.id).attach_status == "detached"
    assert not reachable(info)  # the host's export is gone with the attachment
    assert service(rf).connections(vol.id) == []
    resp = call(rf, "GET", f"/attachments/{att['id']}", token, headers=ATTACH)
    assert resp.status_code == 404

    conn.block_storage.delete_volume(vol)
    conn.block_storage.wait_for_delete(vol, wait=60)


def test_service_api_moves_a_connection_between_hosts(rf: Stack, project: str) -> None:
    """What Nova's side calls in-process: reserve, connect, complete, disconnect, detach,
    each repeated as a redelivered step would; the data follows the volume."""
    volumes = service(rf)
    server = rf.boot(project)
    vol = volumes.create(project, "alice", 1, "moving")
    assert (vol.status, vol.attach_status) == ("available", "detached")

    att = volumes.reserve(vol.id, server)
    assert volumes.reserve(vol.id, server) == att
    assert volumes.get(vol.id).status == "reserved"

    source = volumes.connect(att.id, "host1", mountpoint="/dev/vdb")
    assert volumes.connect(att.id, "host1") == source
    volumes.complete(att.id)
    volumes.complete(att.id)
    assert (volumes.get(vol.id).status, volumes.get(vol.id).attach_status) == ("in-use", "attached")
    assert "wrote 65536/65536" in qemu_io(source.to_dict(), "write -P 0x5a 0 64k")

    # A resize: the source's connection goes, then the dest's is made.
    volumes.disconnect(att.id, "host1")
    volumes.disconnect(att.id, "host1")
    assert not reachable(source.to_dict())
    assert volumes.attachment(att.id).connected_host is None
    dest = volumes.connect(att.id, "host2")
    assert dest.name != source.name
    assert volumes.connections(vol.id) == ["host2"]
    assert "pattern verification failed" not in qemu_io(dest.to_dict(), "read -P 0x5a 0 64k")
    assert "read 65536/65536" in qemu_io(dest.to_dict(), "read -P 0x5a 0 64k")
    assert volumes.get(vol.id).status == "in-use"

    # Connecting elsewhere without a disconnect still leaves one host only.
    back = volumes.connect(att.id, "host1")
    assert volumes.connections(vol.id) == ["host1"]
    assert not reachable(dest.to_dict())

    # A restarted storage host serves the recorded connection again.
    rf.local.stop_storage()
    assert not reachable(back.to_dict())
    rf.local.start_storage()
    assert reachable(back.to_dict())
    assert "read 65536/65536" in qemu_io(back.to_dict(), "read -P 0x5a 0 64k")

    volumes.detach(att.id)
    volumes.detach(att.id)
    assert not reachable(back.to_dict())
    final = volumes.get(vol.id)
    assert (final.status, final.attach_status, final.attachments) == ("available", "detached", ())
    volumes.delete(vol.id)


# -- python-openstackclient ----------------------------------------------------------
@pytest.mark.stacks("sqlite-redis")
def test_openstack_volume_cli(rf: Stack, project: str) -> None:
    token = f"alice:{project}"

    def run(*args: str) -> Any:
        done = volume_osc(rf, *args, token=token)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout) if "-f" in args else done.stdout

    created = run("volume", "create", "--size", "1", "cli-vol", "-f", "json")
    assert (created["name"], created["size"]) == ("cli-vol", 1)
    listed = run("volume", "list", "-f", "json")
    assert [(v["ID"], v["Name"], v["Size"]) for v in listed] == [(created["id"], "cli-vol", 1)]
    run("volume", "set", "--name", "cli-renamed", "--description", "set by osc", created["id"])
    shown = run("volume", "show", created["id"], "-f", "json")
    assert (shown["name"], shown["description"], shown["status"]) == (
        "cli-renamed",
        "set by osc",
        "available",
    )
    run("volume", "delete", created["id"])
    assert run("volume", "list", "-f", "json") == []

    done = volume_osc(rf, "volume", "show", created["id"], token=token)
    assert done.returncode != 0
    assert f"No Volume found for {created['id']}" in done.stderr
