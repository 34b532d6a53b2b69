"""The image store: a directory of images servers boot from, like Glance's file store.

Each image is two files in the store's directory: ``<id>.img`` (its data) and
``<id>.json`` (its metadata, Glance v2's fields). An image exists from the
moment its JSON does, ``queued`` without data; an upload streams into
``<id>.img.part``, and only once the data is complete and checked is it
renamed to ``<id>.img`` and the JSON rewritten as ``active``, atomically and
last. Every process of a deployment (the API, each compute host) reads the
same directory, as Glance's file backend is shared; on separate machines it is
a shared mount. Glance's API over it is :mod:`resizeflow.api.image`.

Nova's own image properties are honoured: an ``ami`` image with ``kernel_id``
and ``ramdisk_id`` boots that kernel and initramfs directly, with
``os_command_line`` as its command line.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import uuid as uuidlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from resizeflow import errors
from resizeflow.errors import ConfigError
from resizeflow.openstack import image_formats
from resizeflow.openstack.base import ImageSpec

# Glance's default image_format.disk_formats and container_formats, in its order.
DISK_FORMATS = ("ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop")
CONTAINER_FORMATS = ("ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed")
VISIBILITIES = ("public", "private", "shared", "community")
CHUNK = 1024 * 1024


def now() -> str:
    # NOTE: kept to the microsecond, so that images made within a second list in order.
    return dt.datetime.now(dt.UTC).isoformat()


def isotime(stamp: str) -> str:
    """A stored time as the APIs show it: to the second, in UTC, with a Z."""
    if not stamp:
        return stamp
    return dt.datetime.fromisoformat(stamp).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class ImageMeta:
    """One image's metadata, as Glance v2 describes it.

    Images written before the store took uploads have no owner and are public.
    """

    id: str
    name: str | None
    disk_format: str | None
    container_format: str | None
    size: int | None = None
    virtual_size: int | None = None
    checksum: str | None = None
    min_disk: int = 0
    min_ram: int = 0
    status: str = "active"
    created_at: str = ""
    properties: dict[str, str] = field(default_factory=dict)
    owner: str | None = None
    visibility: str = "public"
    protected: bool = False
    os_hash_algo: str | None = None
    os_hash_value: str | None = None
    updated_at: str = ""
    tags: list[str] = field(default_factory=list)

    @property
    def bootable(self) -> bool:
        """A disk image a server can boot from (kernels and ramdisks are not)."""
        return self.status == "active" and self.disk_format in {"raw", "qcow2", "ami"}

    def visible_to(self, project: str, admin: bool) -> bool:
        """Glance's default policy: public and community images to all, the rest
        to their owner's project; an admin sees everything."""
        return admin or self.visibility in ("public", "community") or self.owner == project


# Glance's messages for the errors of an image's data, with Glance's status codes.
class ImageNotFound(errors.NotFound):
    msg_fmt = "No image found with ID %(image_id)s"


class InvalidStatusTransition(errors.Conflict):
    msg_fmt = "Image status transition from %(cur_status)s to %(new_status)s is not allowed"


class FormatsMissing(errors.Invalid):
    """An upload to an image whose disk or container format is not set yet."""


class InvalidImageData(errors.ResizeflowError):
    code = 415


class ImageGone(errors.ResizeflowError):
    code = 410
    msg_fmt = (
        "Image %(image_id)s could not be found after upload. The image may have been "
        "deleted during the upload, cleaning up the chunks uploaded."
    )


class Upload:
    """One upload of an image's data into ``<id>.img.part``, hashed as it is written.

    :meth:`ImageStore.begin_upload` makes one; then :meth:`write` each chunk
    and :meth:`finish`, or :meth:`abort` on any failure (the image goes back
    to ``queued``, as Glance puts it back for another try).
    """

    def __init__(self, store: ImageStore, meta: ImageMeta, part: Path, fd: int) -> None:
        self.store, self.meta, self.part = store, meta, part
        self._fh = os.fdopen(fd, "wb")
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._sha512 = hashlib.sha512()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self._fh.write(chunk)
        self._md5.update(chunk)
        self._sha512.update(chunk)
        self.size += len(chunk)

    def finish(self) -> ImageMeta:
        """Check the data against the image's disk_format and make the image active."""
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        try:
            virtual_size = image_formats.check(self.part, str(self.meta.disk_format))
        except (image_formats.FormatMismatch, image_formats.SafetyCheckFailed) as exc:
            self.abort()
            raise InvalidImageData(str(exc)) from None
        current = self.store.get(self.meta.id)
        if current is None:  # deleted while its data arrived
            self.part.unlink(missing_ok=True)
            raise ImageGone(image_id=self.meta.id)
        os.replace(self.part, self.store.data_path(self.meta.id))
        done = replace(
            current,
            status="active",
            size=self.size,
            virtual_size=virtual_size,
            checksum=self._md5.hexdigest(),
            os_hash_algo="sha512",
            os_hash_value=self._sha512.hexdigest(),
            updated_at=now(),
        )
        self.store.save(done)
        return done

    def abort(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        self.part.unlink(missing_ok=True)
        current = self.store.get(self.meta.id)
        if current is not None and current.status == "saving":
            self.store.save(replace(current, status="queued", updated_at=now()))


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
        return sorted(images, key=lambda m: (m.created_at, m.name or "", m.id))

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

    def get_visible(self, image_id: str, project: str, admin: bool) -> ImageMeta | None:
        """The image if ``project`` may see it: another project's private image is not
        found, as Glance answers."""
        meta = self.get(image_id)
        return meta if meta is not None and meta.visible_to(project, admin) else None

    def find(self, ref: str) -> ImageMeta | None:
        """An image by id, or else by name (the newest active one of that name)."""
        meta = self.get(ref)
        if meta is not None:
            return meta
        named = [m for m in self.list() if m.name == ref and m.status == "active"]
        return named[-1] if named else None

    def save(self, meta: ImageMeta) -> None:
        """Write an image's metadata: whole, through a rename, so no reader sees half of it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self._meta_path(meta.id)
        tmp = target.with_name(f"{target.name}.{uuidlib.uuid4().hex[:8]}.tmp")
        tmp.write_text(json.dumps(asdict(meta), indent=1), encoding="utf-8")
        os.replace(tmp, target)

    def create(self, meta: ImageMeta) -> ImageMeta:
        """Record a new image, ``queued``: it has no data until an upload."""
        stamp = now()
        queued = replace(
            meta,
            status="queued",
            size=None,
            virtual_size=None,
            checksum=None,
            os_hash_algo=None,
            os_hash_value=None,
            created_at=stamp,
            updated_at=stamp,
        )
        self.save(queued)
        return queued

    def begin_upload(self, image_id: str) -> Upload:
        """Start taking an image's data: ``queued`` to ``saving``.

        The ``.part`` file is created exclusively, so of two uploads to one
        image, even from two API processes, only one proceeds.
        """
        meta = self.get(image_id)
        if meta is None:
            raise ImageNotFound(image_id=image_id)
        if meta.status != "queued":
            raise InvalidStatusTransition(cur_status=meta.status, new_status="saving")
        missing = [k for k in ("disk_format", "container_format") if not getattr(meta, k)]
        if missing:
            noun = "Property" if len(missing) == 1 else "Properties"
            raise FormatsMissing(f"{noun} {', '.join(missing)} must be set prior to saving data.")
        part = self.data_path(image_id).with_suffix(".img.part")
        try:
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            raise InvalidStatusTransition(cur_status="saving", new_status="saving") from None
        saving = replace(meta, status="saving", updated_at=now())
        self.save(saving)
        return Upload(self, saving, part, fd)

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
        """Copy ``source`` into the store as a new public image, as an upload would."""
        if disk_format not in DISK_FORMATS or container_format not in CONTAINER_FORMATS:
            raise ConfigError(f"unsupported image format {disk_format}/{container_format}")
        image_id = str(uuidlib.UUID(image_id)) if image_id else str(uuidlib.uuid4())
        meta = self.create(
            ImageMeta(
                id=image_id,
                name=name,
                disk_format=disk_format,
                container_format=container_format,
                min_disk=min_disk,
                properties=dict(properties or {}),
            )
        )
        upload = self.begin_upload(meta.id)
        try:
            with open(source, "rb") as fh:
                for chunk in iter(lambda: fh.read(CHUNK), b""):
                    upload.write(chunk)
        except BaseException:
            upload.abort()
            raise
        return upload.finish()

    def delete(self, image_id: str) -> None:
        # The metadata first: from then on the image is gone for every reader.
        self._meta_path(image_id).unlink(missing_ok=True)
        self.data_path(image_id).unlink(missing_ok=True)

    def spec(self, image_id: str) -> ImageSpec | None:
        """What the virt driver needs to build a server's disks from this image."""
        meta = self.get(image_id)
        if meta is None or not meta.bootable:
            return None
        props = meta.properties

        def part(key: str) -> str | None:
            ref = props.get(key)
            if not ref:
                return None
            found = self.get(ref)
            if found is None or found.status != "active":
                raise ConfigError(f"image {meta.id}: its {key} {ref} is not in the store")
            return str(self.data_path(ref))

        return ImageSpec(
            id=meta.id,
            path=str(self.data_path(meta.id)),
            disk_format="raw" if meta.disk_format == "ami" else str(meta.disk_format),
            virtual_size=meta.virtual_size or meta.size or 0,
            kernel=part("kernel_id"),
            ramdisk=part("ramdisk_id"),
            cmdline=props.get("os_command_line"),
        )
