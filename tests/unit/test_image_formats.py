"""The upload format check and the image API's pure parts: patches and list pages."""

from __future__ import annotations

import struct
import uuid
from pathlib import Path

import pytest

from resizeflow.api.image import patch, views
from resizeflow.api.image.faults import GlanceFault
from resizeflow.openstack import image_formats
from resizeflow.openstack.images import ImageMeta


def qcow2_header(size: int, backing: bool = False, data_file: bool = False) -> bytes:
    """A qcow2 v3 header: magic, version, backing file offset, size at 24, features at 72."""
    head = b"QFI\xfb" + struct.pack(">IQ", 3, 0x1000 if backing else 0)
    head = head.ljust(24, b"\0") + struct.pack(">Q", size)
    head = head.ljust(72, b"\0") + struct.pack(">Q", 4 if data_file else 0)
    return head.ljust(4096, b"\0")


def test_a_qcow2_is_recognised_with_its_virtual_size(tmp_path: Path) -> None:
    path = tmp_path / "d.qcow2"
    path.write_bytes(qcow2_header(3 * 1024**2))
    assert image_formats.check(path, "qcow2") == 3 * 1024**2
    # Claimed raw, it is served as raw: its length, not its virtual size.
    assert image_formats.check(path, "raw") == 4096
    with pytest.raises(image_formats.FormatMismatch) as wrong:
        image_formats.check(path, "vmdk")
    assert str(wrong.value) == "Image disk_format vmdk does not match stream data qcow2"


@pytest.mark.parametrize(
    ("claimed", "ok"), [("raw", True), ("aki", True), ("ari", True), ("qcow2", False)]
)
def test_data_without_a_signature(tmp_path: Path, claimed: str, ok: bool) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"\x1f\x8b" + b"x" * 5000)  # a gzip initramfs, say
    if ok:
        assert image_formats.check(path, claimed) == 5002
    else:
        with pytest.raises(image_formats.FormatMismatch):
            image_formats.check(path, claimed)


@pytest.mark.parametrize("kind", ["backing", "data_file"])
def test_a_qcow2_that_points_outside_itself_is_refused(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "evil.qcow2"
    path.write_bytes(qcow2_header(1024**2, **{kind: True}))
    with pytest.raises(image_formats.SafetyCheckFailed):
        image_formats.check(path, "qcow2")
    path.write_bytes(qcow2_header(1024**2))
    assert image_formats.check(path, "qcow2") == 1024**2


def test_patch_applies_all_or_nothing() -> None:
    image = {"name": "a", "min_disk": 0, "kernel_id": "k"}
    changes = [
        {"op": "replace", "path": "/name", "value": "b"},
        {"op": "add", "path": "/os_command_line", "value": "console=ttyS0"},
        {"op": "remove", "path": "/kernel_id"},
    ]
    assert patch.apply(image, changes, "active") == {
        "name": "b",
        "min_disk": 0,
        "os_command_line": "console=ttyS0",
    }
    assert image == {"name": "a", "min_disk": 0, "kernel_id": "k"}  # the input is untouched
    cases = [
        ("replace", "/status", 403, "Attribute 'status' is read-only."),
        ("remove", "/nope", 409, "Property nope does not exist."),
        ("add", "/kernel_id", 409, "Property kernel_id already present."),
        ("move", "/name", 400, "Invalid operation: `move`. "
         "It must be one of the following: add, remove, replace."),
        ("replace", "/disk_format", 403,
         "Attribute disk_format can be only replaced for a queued image."),
        ("replace", "/min_disk", 400,
         "Provided object does not match schema 'image': 'x' is not of type 'integer'"),
    ]  # fmt: skip
    for op, path, code, message in cases:
        with pytest.raises(GlanceFault) as refused:
            patch.apply(image, [{"op": op, "path": path, "value": "x"}], "active")
        assert (refused.value.code, refused.value.explanation) == (code, message)


def _image(name: str, owner: str, visibility: str, created: str) -> ImageMeta:
    return ImageMeta(
        id=str(uuid.uuid4()),
        name=name,
        disk_format="raw",
        container_format="bare",
        owner=owner,
        visibility=visibility,
        created_at=created,
    )


def test_list_scoping_paging_and_bad_parameters() -> None:
    mine = [_image(f"m{i}", "p1", "shared", f"2026-01-01T00:00:0{i}+00:00") for i in range(3)]
    public = _image("pub", "p2", "public", "2026-01-02T00:00:00+00:00")
    hidden = _image("priv", "p2", "private", "2026-01-03T00:00:00+00:00")
    community = _image("com", "p2", "community", "2026-01-04T00:00:00+00:00")
    images = [*mine, public, hidden, community]

    def names(params: dict[str, list[str]], project: str = "p1", admin: bool = False) -> list[str]:
        return [i["name"] for i in views.page(images, params, project, admin)["images"]]

    assert names({}) == ["pub", "m2", "m1", "m0"]  # newest first; not another's community
    assert names({"visibility": ["community"]}) == ["com"]
    assert names({}, admin=True) == ["com", "priv", "pub", "m2", "m1", "m0"]
    assert names({"sort": ["name:asc"], "owner": ["p1"]}) == ["m0", "m1", "m2"]
    first = views.page(images, {"limit": ["2"]}, "p1", False)
    assert first["next"] == f"/v2/images?limit=2&marker={mine[2].id}"
    assert names({"limit": ["2"], "marker": [mine[2].id]}) == ["m1", "m0"]
    for params, message in [
        ({"limit": ["x"]}, "limit param must be an integer"),
        ({"marker": [hidden.id]}, f"No image found with ID {hidden.id}"),
        ({"visibility": ["everyone"]}, "Invalid visibility value: everyone"),
        ({"sort_key": ["owner"]}, "Invalid sort key: owner. It must be one of the following: "
         "name, status, container_format, disk_format, size, id, created_at, updated_at."),
    ]:  # fmt: skip
        with pytest.raises(GlanceFault) as bad:
            views.page(images, params, "p1", False)
        assert (bad.value.code, bad.value.explanation) == (400, message)
