"""What an uploaded image's bytes are, checked against the ``disk_format`` it claims.

Glance looks at the data as it arrives and refuses an upload whose format
does not match its ``disk_format``. The formats a compute host opens with
QEMU matter most: a file that claims to be raw but is qcow2 would let QEMU
follow a backing file of the uploader's choosing, and a qcow2 that names a
backing file or an external data file could read any file of the host. So:

- a claimed ``raw`` image may hold anything (QEMU is told it is raw);
- a format we recognise must be the claimed one;
- an unrecognisable stream passes only as a format nobody can inspect
  (``ami``, ``aki``, ``ari``: kernels, ramdisks, AMI disks);
- a qcow2 with a backing file or an external data file is refused outright.

Only the file's first 64 KiB are read: every signature below lies there.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

# Formats whose signature we read; the others in Glance's list cannot be told apart from raw.
INSPECTABLE = frozenset({"qcow2", "vmdk", "vhd", "vhdx", "vdi", "iso"})
HEAD_BYTES = 64 * 1024
_QCOW2_EXTERNAL_DATA_FILE = 1 << 2  # incompatible feature bit: the data lives in another file


class FormatMismatch(Exception):
    """The data is not what its disk_format says; the message is Glance's."""


class SafetyCheckFailed(Exception):
    """The data is of the claimed format, but one a host must not open."""


@dataclass(frozen=True)
class Inspected:
    format: str  # "raw" when no signature matched
    virtual_size: int | None  # the guest-visible size, where the header says it


def detect(head: bytes, size: int) -> Inspected:
    """The format of a file from its first bytes (``head``) and its length."""
    if head[:4] == b"QFI\xfb" and len(head) >= 32:
        return Inspected("qcow2", struct.unpack(">Q", head[24:32])[0])
    if head[:4] == b"KDMV" and len(head) >= 20:
        # The capacity is counted in 512-byte sectors.
        return Inspected("vmdk", struct.unpack("<Q", head[12:20])[0] * 512)
    if head[:8] == b"vhdxfile":
        return Inspected("vhdx", None)
    if head[:8] == b"conectix":
        return Inspected("vhd", None)
    if head[0x40:0x44] == b"\x7f\x10\xda\xbe":
        return Inspected("vdi", None)
    if head[0x8001:0x8006] == b"CD001":
        return Inspected("iso", None)
    return Inspected("raw", size)


def check(path: Path, disk_format: str) -> int | None:
    """Check the file at ``path`` against ``disk_format``; return its virtual size.

    Raises :class:`FormatMismatch` or :class:`SafetyCheckFailed`.
    """
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(HEAD_BYTES)
    found = detect(head, size)
    if disk_format == "raw":
        # Whatever it holds, it is served and opened as raw: its length is its size.
        return size
    if found.format == "raw" and disk_format not in INSPECTABLE:
        # A kernel, a ramdisk or an AMI disk: nothing to recognise, its length is its size.
        return size
    if found.format != disk_format:
        raise FormatMismatch(
            f"Image disk_format {disk_format} does not match stream data {found.format}"
        )
    if found.format == "qcow2":
        _qcow2_safety(head)
    return found.virtual_size


def _qcow2_safety(head: bytes) -> None:
    backing_offset = struct.unpack(">Q", head[8:16])[0]
    version = struct.unpack(">I", head[4:8])[0]
    incompatible = struct.unpack(">Q", head[72:80])[0] if version >= 3 and len(head) >= 80 else 0
    if backing_offset or incompatible & _QCOW2_EXTERNAL_DATA_FILE:
        raise SafetyCheckFailed("Image failed safety checks")
