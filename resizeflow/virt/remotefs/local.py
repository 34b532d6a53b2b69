"""The ``local`` transport: hosts whose instance directories this machine reaches
in its own filesystem (several simulated hosts on one machine, or peers'
directories mounted here)."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath

from resizeflow.errors import DiskNotFound, RemoteDiskFull, RemoteFilesystemError
from resizeflow.virt.remotefs.argv import tail
from resizeflow.virt.remotefs.base import CopyResult, RemoteHost, absolute, part_path
from resizeflow.virt.remotefs.runner import Deadline, run_command

_CHUNK = 4 * 1024**2


class LocalFilesystem:
    """Hosts whose instance directories this machine reaches in its own filesystem.

    The ``local`` transport: several simulated hosts on one machine (the demo,
    the test tier) or peers' directories mounted here. The host's address is
    not used. The commit rule is the one over SSH: data into ``.<name>.part``,
    flushed, renamed over the final name, directory flushed.
    """

    def create_dir(self, host: RemoteHost, path: PurePosixPath) -> None:
        Path(absolute(path)).mkdir(parents=True, exist_ok=True)

    def exists(self, host: RemoteHost, path: PurePosixPath) -> bool:
        return Path(absolute(path)).exists()

    def remove(self, host: RemoteHost, path: PurePosixPath) -> None:
        path = absolute(path)
        for target in (Path(path), Path(part_path(path))):
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)

    def free_bytes(self, host: RemoteHost, path: PurePosixPath) -> int:
        return shutil.disk_usage(absolute(path)).free

    def execute(
        self, host: RemoteHost, argv: Sequence[str], *, timeout: float | None = None
    ) -> str:
        run = run_command(list(argv), timeout)
        if run.returncode != 0:
            raise RemoteFilesystemError(
                op=f"running {argv[0]}", host=host.name, reason=tail(run.stderr)
            )
        return run.stdout

    def copy_file(
        self,
        src: Path,
        host: RemoteHost,
        dest: PurePosixPath,
        *,
        timeout: float | None = None,
        check_space: bool = True,
        before_commit: Callable[[PurePosixPath], None] | None = None,
    ) -> CopyResult:
        dest = absolute(dest)
        final, part = Path(dest), Path(part_path(dest))
        try:
            st = src.stat()
        except FileNotFoundError:
            raise DiskNotFound(location=str(src)) from None
        final.parent.mkdir(parents=True, exist_ok=True)
        if check_space:
            held = part.stat().st_blocks * 512 if part.exists() else 0
            need = max(0, st.st_blocks * 512 - held)
            free = shutil.disk_usage(final.parent).free
            if need > free:
                raise RemoteDiskFull(
                    host=host.name,
                    path=str(dest),
                    reason=f"the copy needs {need} more bytes and {free} are free",
                )
        deadline = Deadline(timeout)
        try:
            sent = _sparse_copy(src, part, lambda: deadline.left(host, "copy"))
        except OSError as exc:
            part.unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise RemoteDiskFull(host=host.name, path=str(dest), reason=str(exc)) from exc
            raise RemoteFilesystemError(
                op=f"copying to {dest}", host=host.name, reason=str(exc)
            ) from exc
        if before_commit is not None:
            before_commit(PurePosixPath(part))
        os.replace(part, final)
        _fsync_dir(final.parent)
        return CopyResult(size=st.st_size, sent=sent)


def _sparse_copy(src: Path, dst: Path, check: Callable[[], object]) -> int:
    """Copy only the data extents of ``src`` into ``dst``; holes stay holes.

    Returns the bytes written. ``check`` runs between chunks and raises to stop.
    """
    written = 0
    with open(src, "rb", buffering=0) as fin, open(dst, "wb", buffering=0) as fout:
        size, pos = os.fstat(fin.fileno()).st_size, 0
        while pos < size:
            try:
                data = os.lseek(fin.fileno(), pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # only a trailing hole is left
                    break
                raise
            pos = os.lseek(fin.fileno(), data, os.SEEK_HOLE)
            while data < pos:
                check()
                chunk = os.pread(fin.fileno(), min(_CHUNK, pos - data), data)
                if not chunk:  # truncated under us; the final truncate keeps the size
                    break
                n = os.pwrite(fout.fileno(), chunk, data)
                data += n
                written += n
        fout.truncate(size)
        os.fsync(fout.fileno())
    return written


def _fsync_dir(path: Path) -> None:
    # The rename is durable only once the directory is flushed.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
