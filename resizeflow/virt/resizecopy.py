"""The copy of a resize's disks from the source's ``<uuid>_resize`` to the dest.

A dest disk exists only once completely copied (it takes its name last), so a
redelivered step skips the disks already there and rsync resumes a partial
one; any other failure removes the dest's partial directory, as Nova's
``_cleanup_remote_migration`` does, while the source keeps ``_resize``.
"""

from __future__ import annotations

import logging
import time
from contextlib import suppress
from pathlib import Path, PurePosixPath

from resizeflow.errors import RemoteHostUnreachable, TransientError
from resizeflow.virt.remotefs.base import RemoteFilesystem, RemoteHost
from resizeflow.virt.strategy import HostStrategy

log = logging.getLogger(__name__)


def copy_disks(
    host: HostStrategy,
    fs: RemoteFilesystem,
    resize_dir: Path,
    peer: RemoteHost,
    dest_dir: PurePosixPath,
    deadline: float | None,
) -> None:
    """Copy the disks of ``resize_dir`` that the dest's ``dest_dir`` lacks."""
    try:
        for name in host.copied_disks:
            source = resize_dir / name
            if source.exists() and not fs.exists(peer, dest_dir / name):
                _copy_disk(host, fs, source, peer, dest_dir / name, deadline)
    except (TransientError, RemoteHostUnreachable):
        raise  # the retry continues the partial copy
    except Exception:
        with suppress(Exception):
            fs.remove(peer, dest_dir)
        raise


def _copy_disk(
    host: HostStrategy,
    fs: RemoteFilesystem,
    source: Path,
    peer: RemoteHost,
    target: PurePosixPath,
    deadline: float | None,
) -> int:
    """Copy one disk to ``target`` on the peer; the bytes that crossed."""
    started = time.monotonic()
    timeout = None if deadline is None else max(deadline - started, 0.001)
    # The dest's instance dirs are the parent of the instance's own.
    moved = host.copy_disk(fs, source, peer, target, target.parent.parent, timeout)
    log.info(
        "copied %s to %s: %d bytes sent in %.2fs%s",
        source.name,
        peer.name,
        moved.sent,
        time.monotonic() - started,
        f", with backing images {list(moved.backing)}" if moved.backing else "",
    )
    return moved.sent
