"""The SSH transports: rsync (sparse-aware, resumable) and scp, the way Nova's
remotefs drivers copy an instance's disks to another host.

Both share the remote commands, the space check before a byte is sent, and
the commit: the data is flushed, renamed over the final name, and the
directory flushed (see :mod:`resizeflow.virt.remotefs.base`).
"""

from __future__ import annotations

import logging
import os
import shlex
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path, PurePosixPath

from resizeflow.errors import (
    DiskNotFound,
    RemoteDiskFull,
    RemoteFilesystemError,
    ResizeflowError,
)
from resizeflow.virt.remotefs.argv import (
    RSYNC_LINK_CODES,
    SSH_FAILED,
    SSHOptions,
    classify,
    control_path,
    remote_sh,
    rsync_argv,
    rsync_stats,
    scp_argv,
    ssh_argv,
    tail,
)
from resizeflow.virt.remotefs.base import CopyResult, RemoteHost, absolute, part_path
from resizeflow.virt.remotefs.runner import Deadline, Run, run_command

log = logging.getLogger(__name__)


class _SSHFilesystem:
    """What both transports share: remote commands, the space check, the commit."""

    # The commit, in this order: flush the data, rename, flush the directory.
    # A host crash after the rename must not leave a final name over blocks
    # never written. A .part that vanished while the final file exists means a
    # duplicate of this same copy committed first, which is as good.
    _COMMIT = (
        'if [ -e "$1" ]; then'
        ' if [ "$4" = 1 ]; then fallocate --dig-holes -- "$1" 2>/dev/null || :; fi;'
        ' sync -- "$1" && mv -f -- "$1" "$2" && sync -- "$3";'
        ' elif [ -e "$2" ]; then :;'
        ' else echo "the partial copy $1 vanished" >&2; exit 3; fi'
    )
    # The directory, the free space on its filesystem, and what a partial copy
    # already holds there (a resumed copy reuses those blocks).
    _PREPARE = (
        'mkdir -p -- "$1" && stat -f -c "free %a %S" -- "$1" &&'
        ' { stat -c "part %b %B" -- "$2" 2>/dev/null || echo "part 0 0"; }'
    )
    _dig_holes = False

    def __init__(self, opts: SSHOptions) -> None:
        self.opts = opts

    # -- plumbing
    def _prepare_local(self) -> None:
        kh = self.opts.known_hosts
        if kh is not None and not kh.parent.exists():
            kh.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
        cm = self.opts.control_dir
        if cm is not None and control_path(self.opts) is not None and not cm.exists():
            # Private: whoever can reach a control socket can use the connection.
            cm.mkdir(parents=True, mode=0o700, exist_ok=True)

    def _ssh(
        self, host: RemoteHost, command: str, *, op: str, timeout: float | None, path: str = ""
    ) -> Run:
        self._prepare_local()
        if timeout is None:
            timeout = self.opts.command_timeout
        run = run_command(ssh_argv(self.opts, host, command), timeout)
        if run.returncode == SSH_FAILED or run.returncode < 0:
            raise classify(host, op, run.returncode, run.stderr, path=path)
        return run

    def _check(self, run: Run, host: RemoteHost, op: str, path: str = "") -> Run:
        if run.returncode != 0:
            raise classify(host, op, run.returncode, run.stderr, path=path)
        return run

    # -- the Protocol
    def execute(
        self, host: RemoteHost, argv: Sequence[str], *, timeout: float | None = None
    ) -> str:
        op = f"running {argv[0]}"
        return self._check(
            self._ssh(host, shlex.join(argv), op=op, timeout=timeout), host, op
        ).stdout

    def create_dir(self, host: RemoteHost, path: PurePosixPath) -> None:
        self.execute(host, ["mkdir", "-p", "--", str(absolute(path))])

    def exists(self, host: RemoteHost, path: PurePosixPath) -> bool:
        op = f"looking for {path}"
        run = self._ssh(host, shlex.join(["test", "-e", str(absolute(path))]), op=op, timeout=None)
        if run.returncode not in (0, 1):
            raise classify(host, op, run.returncode, run.stderr)
        return run.returncode == 0

    def remove(self, host: RemoteHost, path: PurePosixPath) -> None:
        path = absolute(path)
        self.execute(host, ["rm", "-rf", "--", str(path), str(part_path(path))])

    def free_bytes(self, host: RemoteHost, path: PurePosixPath) -> int:
        out = self.execute(host, ["stat", "-f", "-c", "%a %S", "--", str(absolute(path))])
        avail, bsize = out.split()
        return int(avail) * int(bsize)

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
        src = src.resolve()
        dest = absolute(dest)
        part = part_path(dest)
        try:
            st = src.stat()
        except FileNotFoundError:
            raise DiskNotFound(location=str(src)) from None
        deadline = Deadline(timeout)
        self._prepare_local()
        prep = self._check(
            self._ssh(
                host,
                remote_sh(self._PREPARE, str(dest.parent), str(part)),
                op=f"preparing {dest.parent}",
                timeout=deadline.left(host, "prepare"),
            ),
            host,
            f"preparing {dest.parent}",
        )
        if check_space:
            self._check_space(host, dest, st, prep.stdout)
        log.info("copying %s to %s:%s", src, host.name, dest)
        result = self._transfer(src, st, host, dest, deadline.left(host, "copy"))
        if before_commit is not None:
            before_commit(part)
        self._check(
            self._ssh(
                host,
                remote_sh(
                    self._COMMIT,
                    str(part),
                    str(dest),
                    str(dest.parent),
                    "1" if self._dig_holes else "0",
                ),
                op=f"committing {dest}",
                timeout=deadline.left(host, "commit"),
            ),
            host,
            f"committing {dest}",
            str(dest),
        )
        return result

    def _needed(self, st: os.stat_result) -> int:
        """Bytes the dest will hold: what is allocated here, holes being skipped."""
        return st.st_blocks * 512

    def _check_space(
        self, host: RemoteHost, dest: PurePosixPath, st: os.stat_result, out: str
    ) -> None:
        # Fail before sending a byte: a copy that dies at 95% of a full disk
        # wastes the whole transfer, and the error says how much was missing.
        try:
            nums = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
            free = int(nums["free"][0]) * int(nums["free"][1])
            held = int(nums["part"][0]) * int(nums["part"][1])
        except (KeyError, IndexError, ValueError):
            raise RemoteFilesystemError(
                op=f"checking the space for {dest}", host=host.name, reason=f"got {out!r}"
            ) from None
        need = max(0, self._needed(st) - held)
        if need > free:
            raise RemoteDiskFull(
                host=host.name,
                path=str(dest),
                reason=f"the copy needs {need} more bytes and {free} are free",
            )

    def _transfer(
        self,
        src: Path,
        st: os.stat_result,
        host: RemoteHost,
        dest: PurePosixPath,
        timeout: float | None,
    ) -> CopyResult:
        part = part_path(dest)
        run = run_command(self._argv(src, host, part), timeout)
        if run.returncode == 0:
            return self._result(st, run.stdout)
        err = self._failure(host, run, dest)
        if isinstance(err, RemoteDiskFull):
            # A full disk is final: no retry will continue this .part, and its
            # blocks are what the dest needs back (other guests, a revert).
            with suppress(ResizeflowError):
                self._ssh(host, shlex.join(["rm", "-f", "--", str(part)]), op="cleanup", timeout=30)
        raise err

    def _failure(self, host: RemoteHost, run: Run, dest: PurePosixPath) -> ResizeflowError:
        return classify(host, f"copying to {dest}", run.returncode, run.stderr, path=str(dest))

    def _argv(self, src: Path, host: RemoteHost, part: PurePosixPath) -> list[str]:
        raise NotImplementedError

    def _result(self, st: os.stat_result, stdout: str) -> CopyResult:
        return CopyResult(size=st.st_size, sent=st.st_size)


class RsyncFilesystem(_SSHFilesystem):
    """rsync over ssh: holes stay holes, and a retry resumes an interrupted copy."""

    def _argv(self, src: Path, host: RemoteHost, part: PurePosixPath) -> list[str]:
        return rsync_argv(self.opts, src, host, part)

    def _failure(self, host: RemoteHost, run: Run, dest: PurePosixPath) -> ResizeflowError:
        return classify(
            host,
            f"copying to {dest}",
            run.returncode,
            run.stderr,
            link_codes=RSYNC_LINK_CODES,
            path=str(dest),
        )

    def _result(self, st: os.stat_result, stdout: str) -> CopyResult:
        sent, matched = rsync_stats(stdout)
        return CopyResult(size=st.st_size, sent=sent, matched=matched)


class ScpFilesystem(_SSHFilesystem):
    """scp: the alternative transport. Holes are punched again on the dest
    after the copy, but the copy needs the file's full size there meanwhile."""

    _dig_holes = True

    def _argv(self, src: Path, host: RemoteHost, part: PurePosixPath) -> list[str]:
        return scp_argv(self.opts, src, host, part)

    def _needed(self, st: os.stat_result) -> int:
        return st.st_size

    def _failure(self, host: RemoteHost, run: Run, dest: PurePosixPath) -> ResizeflowError:
        err = super()._failure(host, run, dest)
        if type(err) is RemoteFilesystemError:
            # SFTP reports a full disk as a bare "Failure": ask the dest itself.
            with suppress(ResizeflowError, ValueError):
                if self.free_bytes(host, dest.parent) < 1024**2:
                    return RemoteDiskFull(
                        host=host.name,
                        path=str(dest),
                        reason=tail(run.stderr) + " (the filesystem is full)",
                    )
        return err
