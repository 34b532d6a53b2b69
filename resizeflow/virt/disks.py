"""Nova's disk layout on a real host, with ``qemu-img``.

- ``<instances>/_base/<sha1 of image id>``: the image cache, one raw copy per
  image per host (Nova's ``force_raw_images``);
- ``<uuid>/disk``: the root disk, a qcow2 overlay backed by the cached image;
- ``<uuid>/disk.local`` and ``<uuid>/disk.swap``: the flavor's ephemeral and
  swap disks, standalone qcow2 files;
- ``<uuid>/kernel`` and ``<uuid>/ramdisk``: copies of the image's kernel and
  initramfs when it boots them directly.

Every operation is safe to repeat: files are built under a temporary name and
renamed into place, and a resize goes to an absolute size.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import mmap
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from resizeflow.errors import CannotResizeDisk, FlavorDiskSmallerThanImage, VirtError
from resizeflow.openstack.base import ImageSpec
from resizeflow.virt.base import InstanceSpec

GiB = 1024**3
MiB = 1024**2
BASE = "_base"
ROOT, EPHEMERAL, SWAP = "disk", "disk.local", "disk.swap"
KERNEL, RAMDISK = "kernel", "ramdisk"
# What migrate_disk_and_power_off copies to the dest. NOTE: like Nova, not the
# swap disk (finish_migration makes a fresh one at the new flavor's size) and
# not the kernel or ramdisk (fetched again from the dest's own image cache).
COPIED = (ROOT, EPHEMERAL)


def qemu_img(*args: str) -> str:
    proc = subprocess.run(["qemu-img", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise VirtError(reason=f"qemu-img {args[0]} failed: {proc.stderr.strip()[-400:]}")
    return proc.stdout


def info(path: Path) -> dict[str, Any]:
    # -U: the disk of a running domain is locked by QEMU; reading its header is safe.
    data: dict[str, Any] = json.loads(qemu_img("info", "-U", "--output=json", str(path)))
    return data


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    # Several worker processes may serve one host: one fetch per image at a time.
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def cached_name(image_id: str) -> str:
    """Nova names a cached image after the SHA-1 of its id."""
    return hashlib.sha1(image_id.encode(), usedforsecurity=False).hexdigest()


def cache_image(instances_dir: Path, image: ImageSpec) -> Path:
    """This host's raw copy of ``image`` in ``_base``, fetched once."""
    base = instances_dir / BASE / cached_name(image.id)
    if base.exists():
        return base
    with _locked(base.with_name(base.name + ".lock")):
        if not base.exists():
            part = base.with_name(base.name + ".part")
            qemu_img("convert", "-f", image.disk_format, "-O", "raw", image.path, str(part))
            os.replace(part, base)
    return base


def _cache_file(instances_dir: Path, source: str, kind: str) -> Path:
    cached = instances_dir / BASE / f"{kind}_{cached_name(source)}"
    if not cached.exists():
        with _locked(cached.with_name(cached.name + ".lock")):
            if not cached.exists():
                part = cached.with_name(cached.name + ".part")
                shutil.copyfile(source, part)
                os.replace(part, cached)
    return cached


def _copy_into(src: Path, dst: Path) -> None:
    if dst.exists():
        return
    part = dst.with_name(dst.name + ".part")
    shutil.copyfile(src, part)
    os.replace(part, dst)


def _create_qcow2(path: Path, size: int, backing: Path | None = None) -> None:
    if path.exists():
        return
    part = path.with_name(path.name + ".part")
    part.unlink(missing_ok=True)
    args = ["create", "-q", "-f", "qcow2"]
    if backing is not None:
        args += ["-b", str(backing), "-F", "raw"]
    qemu_img(*args, str(part), str(size))
    os.replace(part, path)


def root_size(inst: InstanceSpec) -> int:
    """The root disk's size: the flavor's, or the image's when the flavor says 0."""
    if inst.root_gb:
        return inst.root_gb * GiB
    return inst.image.virtual_size if inst.image else GiB


def boot_files(instances_dir: Path, inst_dir: Path, image: ImageSpec | None) -> None:
    """Copy the image's kernel and ramdisk into the instance dir, through the cache."""
    if image is None:
        return
    for source, name in ((image.kernel, KERNEL), (image.ramdisk, RAMDISK)):
        if source:
            _copy_into(_cache_file(instances_dir, source, name), inst_dir / name)


def create_disks(instances_dir: Path, inst_dir: Path, inst: InstanceSpec) -> None:
    """Spawn's disks: the root overlay on the cached image, then ephemeral and swap."""
    backing = None
    if inst.image is not None:
        size = root_size(inst)
        if size < inst.image.virtual_size:
            raise FlavorDiskSmallerThanImage(flavor_size=size, image_size=inst.image.virtual_size)
        backing = cache_image(instances_dir, inst.image)
    boot_files(instances_dir, inst_dir, inst.image)
    _create_qcow2(inst_dir / ROOT, root_size(inst), backing)
    if inst.ephemeral_gb:
        _create_qcow2(inst_dir / EPHEMERAL, inst.ephemeral_gb * GiB)
    if inst.swap_mb:
        _create_qcow2(inst_dir / SWAP, inst.swap_mb * MiB)


def _grow(path: Path, size: int) -> None:
    current = int(info(path)["virtual-size"])
    if current > size:
        raise CannotResizeDisk(reason="Unable to resize disk down.")
    if current < size:
        # An absolute size: a redelivered step resizes to the same size again.
        qemu_img("resize", "-q", "-f", "qcow2", str(path), str(size))


def finish_disks(instances_dir: Path, inst_dir: Path, inst: InstanceSpec) -> None:
    """On the dest: point the copied root disk at this host's cache and grow the disks.

    NOTE: the copied overlay still names the source host's ``_base`` as its
    backing file. The same image is cached here first and the header is
    rewritten in place (an unsafe rebase changes no data), so the disk never
    depends on the source host once the resize is confirmed.
    """
    root = inst_dir / ROOT
    if inst.image is not None:
        base = cache_image(instances_dir, inst.image)
        header = info(root)
        if header.get("full-backing-filename", header.get("backing-filename")) != str(base):
            qemu_img("rebase", "-u", "-f", "qcow2", "-F", "raw", "-b", str(base), str(root))
    boot_files(instances_dir, inst_dir, inst.image)
    _grow(root, root_size(inst))
    local = inst_dir / EPHEMERAL
    if inst.ephemeral_gb:
        if local.exists():
            _grow(local, inst.ephemeral_gb * GiB)
        else:
            _create_qcow2(local, inst.ephemeral_gb * GiB)
    swap = inst_dir / SWAP
    if swap.exists() and int(info(swap)["virtual-size"]) != inst.swap_mb * MiB:
        swap.unlink()
    if inst.swap_mb:
        _create_qcow2(swap, inst.swap_mb * MiB)


def supports_direct_io(directory: Path) -> bool:
    """Nova's check for ``cache='none'``: can this filesystem do O_DIRECT?"""
    directory.mkdir(parents=True, exist_ok=True)
    probe = directory / ".directio.test"
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return False
    buf = mmap.mmap(-1, 4096)  # page-aligned, as O_DIRECT requires
    try:
        fd = os.open(probe, os.O_CREAT | os.O_WRONLY | flag, 0o600)
        try:
            os.write(fd, buf)
        finally:
            os.close(fd)
        return True
    except OSError:
        return False
    finally:
        buf.close()
        with suppress(OSError):
            probe.unlink()
