"""The image store: a directory of images servers boot from, like Glance's file store.

Each image is two files in the store's directory: ``<id>.img`` (its data) and
``<id>.json`` (its metadata). The JSON is written last and atomically, so an
image is listed only once its data is complete. Every process of a deployment
(the API, each compute host) reads the same directory, as Glance's file
backend is shared; on separate machines it is a shared mount.

Nova's own image properties are honoured: an ``ami`` image with ``kernel_id``
and ``ramdisk_id`` boots that kernel and initramfs directly, with
``os_command_line`` as its command line.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import uuid as uuidlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from resizeflow.errors import ConfigError
from resizeflow.openstack.base import ImageSpec

DISK_FORMATS = frozenset({"raw", "qcow2", "ami", "aki", "ari"})
CONTAINER_FORMATS = frozenset({"bare", "ami", "aki", "ari"})


@dataclass(frozen=True)
class ImageMeta:
    """One image's metadata, as Glance v2 would describe it."""

    id: str
    name: str
    disk_format: str
    container_format: str
    size: int
    virtual_size: int
    checksum: str
    min_disk: int = 0
    min_ram: int = 0
    status: str = "active"
    created_at: str = ""
    properties: dict[str, str] = field(default_factory=dict)

    @property
    def bootable(self) -> bool:
        """A disk image a server can boot from (kernels and ramdisks are not)."""
        return self.disk_format in {"raw", "qcow2", "ami"}


def _virtual_size(path: Path, disk_format: str) -> int:
    if disk_format != "qcow2":
        return path.stat().st_size
    out = subprocess.run(
        ["qemu-img", "info", "--output=json", "-f", "qcow2", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise ConfigError(f"qemu-img info {path}: {out.stderr.strip()}")
    return int(json.loads(out.stdout)["virtual-size"])


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ImageStore:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def data_path(self, image_id: str) -> Path:
        return self.directory / f"{uuidlib.UUID(image_id)}.img"

    def _meta_path(self, image_id: str) -> Path:
        return self.directory / f"{uuidlib.UUID(image_id)}.json"

    def list(self) -> list[ImageMeta]:
        if not self.directory.is_dir():
            return []
        images = []
        for path in self.directory.glob("*.json"):
            meta = self._load(path)
            if meta is not None:
                images.append(meta)
        return sorted(images, key=lambda m: (m.created_at, m.name, m.id))

    def _load(self, path: Path) -> ImageMeta | None:
        try:
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # deleted while we listed, or not one of ours
        return ImageMeta(**data)

    def get(self, image_id: str) -> ImageMeta | None:
        try:
            path = self._meta_path(image_id)
        except (ValueError, AttributeError, TypeError):
            return None
        return self._load(path) if path.exists() else None

    def find(self, ref: str) -> ImageMeta | None:
        """An image by id, or else by name (the newest of that name)."""
        meta = self.get(ref)
        if meta is not None:
            return meta
        named = [m for m in self.list() if m.name == ref]
        return named[-1] if named else None

    def add(
        self,
        name: str,
        source: Path,
        *,
        disk_format: str,
        container_format: str = "bare",
        properties: dict[str, str] | None = None,
        min_disk: int = 0,
        image_id: str | None = None,
    ) -> ImageMeta:
        """Copy ``source`` into the store as a new image and return its metadata."""
        if disk_format not in DISK_FORMATS or container_format not in CONTAINER_FORMATS:
            raise ConfigError(f"unsupported image format {disk_format}/{container_format}")
        self.directory.mkdir(parents=True, exist_ok=True)
        image_id = str(uuidlib.UUID(image_id)) if image_id else str(uuidlib.uuid4())
        data = self.data_path(image_id)
        part = data.with_name(data.name + ".part")
        shutil.copyfile(source, part)
        os.replace(part, data)
        meta = ImageMeta(
            id=image_id,
            name=name,
            disk_format=disk_format,
            container_format=container_format,
            size=data.stat().st_size,
            virtual_size=_virtual_size(data, disk_format),
            checksum=_md5(data),
            min_disk=min_disk,
            created_at=dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
            properties=dict(properties or {}),
        )
        tmp = self._meta_path(image_id).with_suffix(".json.tmp")
        tmp.write_text(json.dumps(asdict(meta), indent=1), encoding="utf-8")
        os.replace(tmp, self._meta_path(image_id))
        return meta

    def delete(self, image_id: str) -> None:
        self._meta_path(image_id).unlink(missing_ok=True)
        self.data_path(image_id).unlink(missing_ok=True)

    def spec(self, image_id: str) -> ImageSpec | None:
        """What the virt driver needs to build a server's disks from this image."""
        meta = self.get(image_id)
        if meta is None:
            return None
        props = meta.properties

        def part(key: str) -> str | None:
            ref = props.get(key)
            if not ref:
                return None
            if self.get(ref) is None:
                raise ConfigError(f"image {meta.id}: its {key} {ref} is not in the store")
            return str(self.data_path(ref))

        return ImageSpec(
            id=meta.id,
            path=str(self.data_path(meta.id)),
            disk_format="raw" if meta.disk_format == "ami" else meta.disk_format,
            virtual_size=meta.virtual_size,
            kernel=part("kernel_id"),
            ramdisk=part("ramdisk_id"),
            cmdline=props.get("os_command_line"),
        )
