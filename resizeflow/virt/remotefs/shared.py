"""Whether two hosts' instance directories are one, as Nova detects shared storage."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path, PurePosixPath

from resizeflow.virt.remotefs.base import RemoteFilesystem, RemoteHost


def is_path_shared_with(
    fs: RemoteFilesystem,
    host: RemoteHost,
    local_dir: Path,
    remote_dir: PurePosixPath | None = None,
) -> bool:
    """Whether ``local_dir`` here and ``remote_dir`` (default: the same path) on
    ``host`` are one directory: make a file here and look for it there."""
    remote_dir = remote_dir if remote_dir is not None else PurePosixPath(local_dir.resolve())
    fd, name = tempfile.mkstemp(dir=local_dir, prefix=".rf-shared-")
    os.close(fd)
    probe = Path(name)
    try:
        return fs.exists(host, remote_dir / probe.name)
    finally:
        # Removed even when the check failed: in a shared directory the probe
        # would otherwise show up in the other host's instance listing.
        probe.unlink(missing_ok=True)


def storage_is_shared(
    override: bool | None,
    local_host: str,
    fs: RemoteFilesystem,
    host: RemoteHost,
    local_dir: Path,
    remote_dir: PurePosixPath,
) -> bool:
    """``override`` (RESIZEFLOW_SHARED_STORAGE) when set; one host is its own
    storage; otherwise detect it."""
    if override is not None:
        return override
    if host.name == local_host:
        return True
    return is_path_shared_with(fs, host, local_dir, remote_dir)
