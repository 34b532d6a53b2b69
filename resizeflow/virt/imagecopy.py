"""A qcow2 overlay and its backing chain, copied to another host's image cache.

An instance disk is a qcow2 overlay on a base image in ``_base/``, the image
cache. Moving the disk to another host means copying the overlay, and copying
the base only when the dest's cache lacks it: most hosts already hold the
popular images, and a base is often many times the size of the overlay.

Cached images are found by file name. That is safe because a copy never
leaves a partial file under its final name (see ``remotefs``), so a name in
the dest's cache is always a complete image.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from resizeflow.errors import DiskNotFound, VirtError
from resizeflow.virt.remotefs.base import CopyResult, RemoteFilesystem, RemoteHost
from resizeflow.virt.remotefs.runner import Deadline

# What a copy that runs out of its time is reported as.
_COPY = "disk copy"


@dataclass(frozen=True)
class ImageInfo:
    """One image of a chain, as ``qemu-img info`` reports it."""

    path: str
    format: str
    virtual_size: int
    actual_size: int
    # As written in the image's header (may be relative), and resolved.
    backing_file: str | None = None
    backing_path: str | None = None
    backing_format: str | None = None


@dataclass(frozen=True)
class DiskTransfer:
    """What :func:`copy_disk` did: the overlay's copy and the fate of each backing image."""

    disk: CopyResult
    backing_copied: tuple[PurePosixPath, ...]
    backing_present: tuple[PurePosixPath, ...]
    # What the backing images' copies sent.
    backing_sent: int = 0

    @property
    def sent(self) -> int:
        """Every byte that crossed: the overlay's and its backing images'."""
        return self.disk.sent + self.backing_sent


def backing_chain(path: Path, *, fmt: str, timeout: float = 60.0) -> tuple[ImageInfo, ...]:
    """``path`` and the images under it, top first.

    ``fmt`` is the format the caller created the disk in. It is never probed:
    a raw disk whose guest wrote a qcow2 header into it would otherwise name
    any file on this host as its "backing file", and it would be copied.
    """
    argv = ["qemu-img", "info", "--output=json", "--backing-chain", "-U", "-f", fmt, str(path)]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise VirtError(reason="qemu-img is not installed") from None
    except subprocess.TimeoutExpired:
        raise VirtError(reason=f"qemu-img info {path} took more than {timeout:.0f}s") from None
    if proc.returncode != 0:
        if not path.exists():
            raise DiskNotFound(location=str(path))
        raise VirtError(reason=f"qemu-img info {path}: {proc.stderr.strip()}")
    raw: list[dict[str, Any]] = json.loads(proc.stdout)
    return tuple(
        ImageInfo(
            path=item["filename"],
            format=item["format"],
            virtual_size=int(item["virtual-size"]),
            actual_size=int(item.get("actual-size", 0)),
            backing_file=item.get("backing-filename"),
            backing_path=item.get("full-backing-filename"),
            backing_format=item.get("backing-filename-format"),
        )
        for item in raw
    )


def copy_disk(
    fs: RemoteFilesystem,
    src: Path,
    host: RemoteHost,
    dest: PurePosixPath,
    *,
    local_cache: Path,
    remote_cache: PurePosixPath,
    fmt: str = "qcow2",
    timeout: float | None = None,
) -> DiskTransfer:
    """Copy the disk ``src`` to ``dest`` on ``host``, its backing images to ``remote_cache``.

    Every backing image must live in ``local_cache``, where the driver keeps
    them. Images the dest already has are left alone. The copies are rebased,
    without touching their data, onto the dest's cache paths when those differ
    from the source's. ``timeout`` bounds the whole transfer.
    """
    end = Deadline(timeout)
    chain = backing_chain(src, fmt=fmt)
    backings = chain[1:]
    cache = local_cache.resolve()
    for image in backings:
        if Path(image.path).resolve().parent != cache:
            raise VirtError(reason=f"{src}: backing image {image.path} is not in {cache}")
    targets = [remote_cache / PurePosixPath(image.path).name for image in backings]

    copied: list[PurePosixPath] = []
    present: list[PurePosixPath] = []
    backing_sent = 0
    # (copy_file makes the dest directories itself, in the same round trip as
    # its space check: one SSH connection fewer per image.)
    # Deepest first: an image takes its final name only once every image it
    # leans on is in place, so the dest never holds a disk it cannot open.
    for i in reversed(range(len(backings))):
        if fs.exists(host, targets[i]):
            present.append(targets[i])
            continue
        below = (chain[i + 2], targets[i + 1]) if i + 1 < len(backings) else None
        backing_sent += fs.copy_file(
            Path(backings[i].path),
            host,
            targets[i],
            timeout=end.left(host, _COPY),
            before_commit=_rebase(fs, host, backings[i], below, end),
        ).sent
        copied.append(targets[i])
    top_below = (chain[1], targets[0]) if backings else None
    disk = fs.copy_file(
        src,
        host,
        dest,
        timeout=end.left(host, _COPY),
        before_commit=_rebase(fs, host, chain[0], top_below, end),
    )
    return DiskTransfer(
        disk=disk,
        backing_copied=tuple(copied),
        backing_present=tuple(present),
        backing_sent=backing_sent,
    )


def _rebase(
    fs: RemoteFilesystem,
    host: RemoteHost,
    image: ImageInfo,
    below: tuple[ImageInfo, PurePosixPath] | None,
    end: Deadline,
) -> Callable[[PurePosixPath], None] | None:
    """A before-commit hook pointing a copied image at its backing's dest path."""
    if below is None:
        return None
    backing, target = below
    if image.backing_file == str(target):
        return None  # same layout on both hosts: the header is already right
    backing_fmt = image.backing_format or backing.format

    def rebase(part: PurePosixPath) -> None:
        # -u rewrites only the header: the data is the same on both sides,
        # and the backing image is already in place (copied deepest first).
        fs.execute(
            host,
            ["qemu-img", "rebase", "-u", "-f", image.format, "-F", backing_fmt,
             "-b", str(target), str(part)],
            timeout=end.left(host, _COPY),
        )  # fmt: skip

    return rebase
