"""The image store through Nova's ``/images`` proxy, and the boot-time image checks."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import openstack

from resizeflow.openstack.images import ImageStore
from tests.vm.helpers import SMALL, VmStack


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

        # A 2 GiB image does not fit the 1 GiB flavor.
        big = tmp_path / "big.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(big), "2G"], check=True)
        image = ImageStore(vm.stack.settings.images_dir()).add(
            f"big-{uuid.uuid4().hex[:6]}", big, disk_format="qcow2"
        )
        body = {"name": "x", "flavorRef": SMALL["id"], "imageRef": image.id}
        r = c.post("/servers", json={"server": body})
        assert r.status_code == 400
        assert r.json()["badRequest"]["message"] == (
            "Flavor's disk is too small for requested image. Flavor disk is 1073741824 bytes, "
            "image is 2147483648 bytes."
        )
