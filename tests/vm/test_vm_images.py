"""The guest as the image API holds it, Nova's ``/images`` proxy over the same store,
and the boot-time image checks."""

from __future__ import annotations

import hashlib
import subprocess
import uuid
from pathlib import Path

import openstack
from openstack.connection import Connection

from tests.vm.helpers import SMALL, VmStack


def image_api(vm: VmStack, token: str = "admin:admin") -> Connection:
    endpoint = vm.stack.local.api_url + "/image/v2"
    return openstack.connect(auth_type="admin_token", auth={"endpoint": endpoint, "token": token})


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def test_the_guest_was_uploaded_through_the_image_api(vm: VmStack) -> None:
    conn = image_api(vm, f"alice:p-{uuid.uuid4().hex[:8]}")  # public: any project sees it
    disk = conn.image.get_image(vm.image_id)
    assert (disk.name, disk.status, disk.disk_format, disk.visibility) == (
        "rf-guest", "active", "raw", "public",
    )  # fmt: skip
    assert disk.checksum == md5(vm.files.disk)
    kernel = conn.image.get_image(disk.kernel_id)
    ramdisk = conn.image.get_image(disk.ramdisk_id)
    assert (kernel.disk_format, kernel.container_format) == ("aki", "aki")
    assert (ramdisk.disk_format, ramdisk.container_format) == ("ari", "ari")
    assert kernel.checksum == md5(vm.files.kernel)
    assert ramdisk.checksum == md5(vm.files.initrd)
    assert disk.os_command_line == vm.files.cmdline


def test_images_are_listed_and_clients_pick_one(vm: VmStack) -> None:
    with vm.client() as c:
        listed = c.get("/images").json()["images"]
        assert vm.image_id in [i["id"] for i in listed]
        shown = c.get(f"/images/{vm.image_id}")
        assert shown.status_code == 200, shown.text
        detail = shown.json()["image"]
        assert detail["name"] == "rf-guest" and detail["status"] == "ACTIVE"
        assert detail["metadata"]["kernel_id"] in [i["id"] for i in listed]
        missing = c.get(f"/images/{uuid.uuid4()}")
        assert missing.status_code == 404
        assert missing.json()["itemNotFound"]["message"] == "Image not found."
    conn = openstack.connect(
        auth_type="admin_token", auth={"endpoint": vm.stack.api_endpoint(), "token": "admin:admin"}
    )
    picked = conn.compute.find_image("rf-guest")
    assert picked is not None and picked.id == vm.image_id

    # Booting it by imageRef, as a client that picked it would.
    project = f"p-{uuid.uuid4().hex[:8]}"
    sid = vm.boot(project, "vm1", image_ref=picked.id)
    server = vm.wait_status(sid, "ACTIVE")
    assert server["image"]["id"] == vm.image_id
    vm.delete(sid)
    vm.wait_gone(sid)


def test_boot_refuses_unknown_images_and_too_small_flavors(vm: VmStack, tmp_path: Path) -> None:
    with vm.client() as c:
        body = {"name": "x", "flavorRef": SMALL["id"], "imageRef": str(uuid.uuid4())}
        r = c.post("/servers", json={"server": body})
        assert r.status_code == 400
        assert r.json()["badRequest"]["message"] == "Can not find requested image"

    # A 2 GiB image, uploaded by a project as its own: it does not fit the 1 GiB flavor.
    owner, other = f"p-{uuid.uuid4().hex[:8]}", f"p-{uuid.uuid4().hex[:8]}"
    big = tmp_path / "big.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(big), "2G"], check=True)
    image = image_api(vm, f"alice:{owner}").image.create_image(
        name=f"big-{owner}", filename=str(big), disk_format="qcow2", container_format="bare"
    )
    body = {"name": "x", "flavorRef": SMALL["id"], "imageRef": image.id}
    with vm.client(owner) as c:
        r = c.post("/servers", json={"server": body})
        assert r.status_code == 400
        assert r.json()["badRequest"]["message"] == (
            "Flavor's disk is too small for requested image. Flavor disk is 1073741824 bytes, "
            "image is 2147483648 bytes."
        )
    # Another project cannot boot a private image: to it, the image does not exist.
    with vm.client(other) as c:
        r = c.post("/servers", json={"server": body}, headers={"X-Auth-Token": f"bob:{other}"})
        assert r.status_code == 400
        assert r.json()["badRequest"]["message"] == "Can not find requested image"
