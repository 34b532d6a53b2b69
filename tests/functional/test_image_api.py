"""OpenStack's own clients drive the image API that ``resizeflow api`` serves at ``/image``.

openstacksdk finds v2 through the version document at the endpoint's root,
as it finds Glance's; its ``image`` proxy creates, uploads, downloads, pages,
updates and deletes images, and python-openstackclient's ``openstack image``
commands do the same through their command line. Bad input gets Glance's
status codes with nothing left behind, and one project never sees another's
private image. Nova's ``/images`` proxy reads the same store.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import openstack
import pytest
from openstack.connection import Connection

from tests.support.clients import osc
from tests.support.stack import Stack

# One stack is enough: the image API does not touch the database or the broker.
ONE_STACK = pytest.mark.stacks("sqlite-redis")


def image_endpoint(rf: Stack) -> str:
    return rf.api_endpoint().removesuffix("/v2.1") + "/image"


def connect(rf: Stack, token: str = "admin:admin") -> Connection:
    # As test_openstack_clients points at /v2.1: the admin_token plugin's endpoint is
    # where requests go, without the catalog's discovery (tested on its own below).
    return openstack.connect(
        auth_type="admin_token", auth={"endpoint": image_endpoint(rf) + "/v2", "token": token}
    )


def image_osc(
    rf: Stack, *args: str, token: str = "admin:admin"
) -> subprocess.CompletedProcess[str]:
    return osc(rf, *args, token=token, endpoint=image_endpoint(rf) + "/v2")


def osc_json(rf: Stack, *args: str, token: str = "admin:admin") -> Any:
    done = image_osc(rf, *args, "-f", "json", token=token)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def qcow2(path: Path, size: str = "64M") -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)
    return path


def blob(path: Path, size: int) -> Path:
    """``size`` bytes that are no disk format at all (so raw, or a kernel)."""
    path.write_bytes(hashlib.sha512(path.name.encode()).digest() * (size // 64))
    return path


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


@ONE_STACK
def test_discovery_finds_v2_at_the_image_root(rf: Stack) -> None:
    conn = openstack.connect(
        auth_type="admin_token", auth={"endpoint": image_endpoint(rf), "token": "admin:admin"}
    )
    data = conn.image.get_endpoint_data()
    assert data.api_version == (2, 5)
    assert data.url == image_endpoint(rf) + "/v2/"
    root = httpx.get(image_endpoint(rf) + "/")
    assert root.status_code == 300  # Multiple Choices, as Glance answers its root
    assert {v["status"] for v in root.json()["versions"]} == {"CURRENT", "SUPPORTED"}


@ONE_STACK
def test_sdk_upload_download_round_trip(rf: Stack, project: str, tmp_path: Path) -> None:
    conn = connect(rf, f"alice:{project}")
    source = qcow2(tmp_path / "disk.qcow2")
    image = conn.image.create_image(
        name=f"sdk-{project}",
        filename=str(source),
        disk_format="qcow2",
        container_format="bare",
        properties={"rf_purpose": "round-trip"},
        wait=True,
    )
    shown = conn.image.get_image(image.id)
    assert shown.status == "active"
    assert shown.checksum == md5(source)
    assert shown.hash_algo == "sha512"
    assert shown.hash_value == hashlib.sha512(source.read_bytes()).hexdigest()
    assert shown.size == source.stat().st_size
    assert shown.virtual_size == 64 * 1024**2
    assert shown.owner == project and shown.visibility == "shared"
    assert shown.properties["rf_purpose"] == "round-trip"

    out = tmp_path / "back.qcow2"
    conn.image.download_image(shown, output=str(out))
    assert md5(out) == md5(source)
    raw = httpx.get(
        f"{image_endpoint(rf)}/v2/images/{image.id}/file",
        headers={"X-Auth-Token": f"alice:{project}"},
    )
    assert raw.headers["Content-MD5"] == md5(source)

    assert conn.image.find_image(f"sdk-{project}").id == image.id
    conn.image.delete_image(image)
    assert conn.image.find_image(image.id) is None


@ONE_STACK
def test_sdk_pages_with_limit_and_marker(rf: Stack, project: str, tmp_path: Path) -> None:
    conn = connect(rf, f"alice:{project}")
    data = blob(tmp_path / "data.raw", 4096)
    made = [
        conn.image.create_image(
            name=f"page-{i}", filename=str(data), disk_format="raw", container_format="bare"
        ).id
        for i in range(5)
    ]
    # Newest first by default; two a page: three requests, every image once.
    listed = [i.id for i in conn.image.images(owner=project, limit=2)]
    assert listed == made[::-1]
    with httpx.Client(headers={"X-Auth-Token": f"alice:{project}"}) as c:
        first = c.get(f"{image_endpoint(rf)}/v2/images", params={"owner": project, "limit": 2})
        body = first.json()
        assert [i["id"] for i in body["images"]] == made[:2:-1]
        assert body["next"] == f"/v2/images?owner={project}&limit=2&marker={made[3]}"
        ascending = c.get(
            f"{image_endpoint(rf)}/v2/images",
            params={"owner": project, "sort": "name:asc", "marker": made[1]},
        )
        assert [i["name"] for i in ascending.json()["images"]] == ["page-2", "page-3", "page-4"]
    for image_id in made:
        conn.image.delete_image(image_id)


@ONE_STACK
def test_bad_formats_are_refused_and_leave_no_image(
    rf: Stack, project: str, tmp_path: Path
) -> None:
    conn = connect(rf, f"alice:{project}")
    data = blob(tmp_path / "data.raw", 4096)
    with pytest.raises(openstack.exceptions.BadRequestException) as bad_disk:
        conn.image.create_image(
            name="bad-disk", filename=str(data), disk_format="qcow3", container_format="bare"
        )
    assert "Provided object does not match schema 'image': 'qcow3' is not one of [None, 'ami'" in (
        str(bad_disk.value)
    )
    with pytest.raises(openstack.exceptions.BadRequestException) as bad_container:
        conn.image.create_image(
            name="bad-container", filename=str(data), disk_format="raw", container_format="tar"
        )
    assert "'tar' is not one of [None, 'ami', 'ari', 'aki', 'bare', 'ovf', 'ova', 'docker', " in (
        str(bad_container.value)
    )
    # Data that is not what its disk_format says: refused, and the sdk deletes the image.
    with pytest.raises(openstack.exceptions.HttpException) as mismatch:
        conn.image.create_image(
            name="not-qcow2", filename=str(data), disk_format="qcow2", container_format="bare"
        )
    # The sdk asks for no particular media type here: Glance's plain-text error body.
    assert mismatch.value.status_code == 415
    assert "Image disk_format qcow2 does not match stream data raw" in mismatch.value.response.text
    assert list(conn.image.images(owner=project)) == []


@ONE_STACK
def test_a_failed_upload_puts_the_image_back_to_queued(rf: Stack, project: str) -> None:
    base = f"{image_endpoint(rf)}/v2/images"
    with httpx.Client(headers={"X-Auth-Token": f"alice:{project}"}) as c:
        r = c.post(base, json={"name": "q", "disk_format": "qcow2", "container_format": "bare"})
        assert r.status_code == 201 and r.json()["status"] == "queued"
        image_id = r.json()["id"]
        octets = {"Content-Type": "application/octet-stream", "Accept": "application/json"}
        r = c.put(f"{base}/{image_id}/file", content=b"\0" * 70000, headers=octets)
        assert r.status_code == 415
        assert r.json()["message"].startswith(
            "Image disk_format qcow2 does not match stream data raw"
        )
        shown = c.get(f"{base}/{image_id}").json()
        assert (shown["status"], shown["size"], shown["checksum"]) == ("queued", None, None)
        assert c.get(f"{base}/{image_id}/file").status_code == 204  # no data to give
        # Queued again: the next upload may go ahead.
        header = b"QFI\xfb" + b"\0\0\0\x03" + b"\0" * 16 + (1024**2).to_bytes(8, "big")
        r = c.put(f"{base}/{image_id}/file", content=header + b"\0" * 1000, headers=octets)
        assert r.status_code == 204, r.text
        shown = c.get(f"{base}/{image_id}").json()
        assert (shown["status"], shown["virtual_size"]) == ("active", 1024**2)
        r = c.put(f"{base}/{image_id}/file", content=b"again", headers=octets)
        assert r.status_code == 409
        assert "Image status transition from active to saving is not allowed" in r.text
        assert c.delete(f"{base}/{image_id}").status_code == 204


@ONE_STACK
def test_projects_see_their_own_and_public_images(rf: Stack, tmp_path: Path) -> None:
    owner, other = f"p-{uuid.uuid4().hex[:8]}", f"p-{uuid.uuid4().hex[:8]}"
    data = blob(tmp_path / "data.raw", 2048)
    mine = connect(rf, f"alice:{owner}").image.create_image(
        name="private-one", filename=str(data), disk_format="raw", container_format="bare"
    )
    theirs = connect(rf, f"mallory:{other}")
    with pytest.raises(openstack.exceptions.NotFoundException) as hidden:
        theirs.image.get_image(mine.id)
    assert f"No image found with ID {mine.id}" in str(hidden.value)
    assert mine.id not in [i.id for i in theirs.image.images()]
    with pytest.raises(openstack.exceptions.NotFoundException):
        theirs.image.delete_image(mine.id, ignore_missing=False)
    # Only an admin publishes; then every project sees it, and still cannot delete it.
    with pytest.raises(openstack.exceptions.ForbiddenException) as publish:
        connect(rf, f"alice:{owner}").image.update_image(mine.id, visibility="public")
    assert "You are not authorized to complete publicize_image action." in (
        publish.value.response.text
    )
    admin = connect(rf)
    assert admin.image.get_image(mine.id).owner == owner  # an admin sees every image
    admin.image.update_image(mine.id, visibility="public")
    assert theirs.image.get_image(mine.id).visibility == "public"
    with pytest.raises(openstack.exceptions.ForbiddenException):
        theirs.image.delete_image(mine.id, ignore_missing=False)
    # Nova's proxy answers from the same store, with the same scoping.
    nova = httpx.get(
        f"{rf.api_endpoint()}/images/{mine.id}", headers={"X-Auth-Token": f"mallory:{other}"}
    )
    assert nova.status_code == 200 and nova.json()["image"]["status"] == "ACTIVE"
    admin.image.delete_image(mine.id)


@ONE_STACK
def test_deleting_a_missing_image_is_404(rf: Stack) -> None:
    conn = connect(rf)
    missing = str(uuid.uuid4())
    with pytest.raises(openstack.exceptions.NotFoundException) as gone:
        conn.image.delete_image(missing, ignore_missing=False)
    assert f"Failed to find image {missing} to delete" in str(gone.value)
    with httpx.Client(headers={"X-Auth-Token": "admin:admin"}) as c:
        r = c.delete(f"{image_endpoint(rf)}/v2/images/{missing}", headers={"Accept": "*/*"})
        assert r.status_code == 404
        assert f"Failed to find image {missing} to delete<br />" in r.text
    # OSC words any 404 of a delete as its --store option's failure, against Glance too.
    done = image_osc(rf, "image", "delete", missing)
    assert (done.returncode, done.stderr) == (1, "Multi Backend support not enabled.\n")


@ONE_STACK
def test_osc_image_create_list_show_set_delete(rf: Stack, project: str, tmp_path: Path) -> None:
    token = f"alice:{project}"
    kernel = blob(tmp_path / "vmlinuz", 8192)
    created = osc_json(
        rf,
        "image", "create", "--file", str(kernel), "--disk-format", "aki",
        "--container-format", "aki", "--property", "os_command_line=console=ttyS0",
        f"osc-kernel-{project}",
        token=token,
    )  # fmt: skip
    image_id = created["id"]
    assert created["status"] == "active"
    assert created["checksum"] == md5(kernel)

    listed = osc_json(rf, "image", "list", "--long", token=token)
    assert [i["ID"] for i in listed if i["Name"] == f"osc-kernel-{project}"] == [image_id]

    done = image_osc(rf, "image", "set", "--property", "kernel_flavour=cloud", "--name", "k2",
                     image_id, token=token)  # fmt: skip
    assert done.returncode == 0, done.stderr
    shown = osc_json(rf, "image", "show", image_id, token=token)
    assert shown["name"] == "k2" and shown["disk_format"] == "aki"
    assert shown["properties"]["kernel_flavour"] == "cloud"
    assert shown["properties"]["os_command_line"] == "console=ttyS0"

    saved = tmp_path / "saved"
    done = image_osc(rf, "image", "save", "--file", str(saved), image_id, token=token)
    assert done.returncode == 0, done.stderr
    assert md5(saved) == md5(kernel)

    done = image_osc(rf, "image", "delete", image_id, token=token)
    assert done.returncode == 0, done.stderr
    assert image_osc(rf, "image", "show", image_id, token=token).returncode != 0


def _peak_rss(pid: int) -> int:
    """A process's peak resident set (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


@ONE_STACK
def test_an_upload_is_streamed_not_held_in_memory(rf: Stack, tmp_path: Path) -> None:
    conn = connect(rf)  # starts the API: its peak memory from here on is the upload's
    list(conn.image.images(limit=1))
    api_pid = rf.local.sup.procs["api"].pid
    before = _peak_rss(api_pid)
    big = tmp_path / "big.raw"
    with open(big, "wb") as fh:
        fh.truncate(256 * 1024**2)  # sparse: 256 MiB of zeros without writing them
    image = conn.image.create_image(
        name="big", filename=str(big), disk_format="raw", container_format="bare"
    )
    assert conn.image.get_image(image.id).size == 256 * 1024**2
    out = tmp_path / "back.raw"
    conn.image.download_image(image, output=str(out))
    assert out.stat().st_size == 256 * 1024**2
    # Held whole, the image would add 256 MiB; streamed, a few chunks of 1 MiB.
    assert _peak_rss(api_pid) - before < 64 * 1024**2
    conn.image.delete_image(image)
