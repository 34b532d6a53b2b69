"""Files on other compute hosts, over SSH, the way Nova's remotefs drivers work.

Two transports behind one small Protocol: rsync (sparse-aware, resumable) and
scp. Every remote command runs through ``ssh`` with the deployment's key, in
batch mode, against a known_hosts file of the deployment's own.

A copy never puts a partial file under its final name. It writes
``.<name>.part`` next to the final path, then, on the remote side, flushes it
and renames it over the final name. A file under a final name is therefore
always complete, and a retried copy continues the same temporary file.

Failures say which host and why. A connection that cannot be made or that
drops (sshd down, a wrong port, a timeout) is a
:class:`~resizeflow.errors.RemoteHostUnreachable`, which is transient. A full
dest filesystem is a :class:`~resizeflow.errors.RemoteDiskFull`, final. Other
failures are a final :class:`~resizeflow.errors.RemoteFilesystemError`.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

from resizeflow.conf import Settings
from resizeflow.errors import (
    DiskNotFound,
    RemoteDiskFull,
    RemoteFilesystemError,
    RemoteHostUnreachable,
    ResizeflowError,
)

log = logging.getLogger(__name__)

PART_SUFFIX = ".part"
_CHUNK = 4 * 1024**2
_STDERR_TAIL = 600
# A unix socket's path must fit sun_path: 108 bytes on Linux, its NUL included.
_SOCKET_PATH_MAX = 108
# ssh's %C (a SHA-1 hex digest), and the ".XXXXXXXXXXXXXXXX" ssh binds under first.
_CONTROL_HASH = 40
_CONTROL_BIND_SUFFIX = 17

# ssh's own exit status when the connection (not the remote command) failed.
_SSH_FAILED = 255
# rsync's exit codes for a broken stream or a timeout: the link, not the data.
_RSYNC_LINK_CODES = frozenset({5, 10, 12, 20, 30, 35, _SSH_FAILED})
_DISK_FULL = re.compile(r"No space left on device|Disk quota exceeded|ENOSPC", re.I)
# Misconfiguration that retrying cannot fix: someone must act on the key or the host key.
_AUTH_FAILED = re.compile(
    r"Permission denied \([a-z]|Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED"
    r"|No such identity|Load key|Too many authentication failures",
)
_RSYNC_STAT = re.compile(r"^(Literal|Matched) data: ([\d,.]+) bytes", re.M)
_UNRESOLVED = re.compile(r"Could not resolve hostname")


@dataclass(frozen=True)
class RemoteHost:
    """A compute host as seen for SSH: its name (for errors) and migration address."""

    name: str
    address: str

    @property
    def bracketed(self) -> str:
        """The address as rsync and scp want it before ``:path``."""
        return f"[{self.address}]" if ":" in self.address else self.address


@dataclass(frozen=True)
class SSHOptions:
    key: Path | None = None
    user: str = ""
    port: int = 22
    known_hosts: Path | None = None
    strict_host_key_checking: str = "accept-new"
    connect_timeout: float = 10.0
    # rsync gives up when no data moved for this long; ssh's keepalives
    # notice a dead peer after about three intervals.
    io_timeout: float = 60.0
    # The bound on a small remote command (mkdir, test, rm, the commit's
    # rename) run without a timeout of its own: a hung remote filesystem
    # must not hang the step with it.
    command_timeout: float = 300.0
    bwlimit_kib: int = 0
    # Where ssh keeps its shared connections (ControlMaster): a copy makes
    # several SSH calls per disk (prepare, transfer, commit), and each would
    # otherwise pay for a new connection and key exchange. None: no sharing.
    control_dir: Path | None = None
    control_persist: int = 30


@dataclass(frozen=True)
class CopyResult:
    """What one copy moved: ``sent`` crossed the wire, ``matched`` was already there."""

    size: int
    sent: int
    matched: int = 0


class RemoteFilesystem(Protocol):
    """Files and directories on another host. Paths are absolute, on that host."""

    def create_dir(self, host: RemoteHost, path: PurePosixPath) -> None: ...

    def exists(self, host: RemoteHost, path: PurePosixPath) -> bool: ...

    def remove(self, host: RemoteHost, path: PurePosixPath) -> None:
        """Remove a file or a directory tree, and a file's partial copy."""

    def free_bytes(self, host: RemoteHost, path: PurePosixPath) -> int: ...

    def execute(
        self, host: RemoteHost, argv: Sequence[str], *, timeout: float | None = None
    ) -> str:
        """Run one command on the host; its stdout."""

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
        """Copy a local file to ``dest`` on the host, creating its directory.

        ``before_commit`` gets the remote temporary path once its data is all
        there and before it takes the final name (to rebase an overlay, say).
        """


def part_path(dest: PurePosixPath) -> PurePosixPath:
    """Where a copy to ``dest`` writes until it is complete."""
    return dest.parent / f".{dest.name}{PART_SUFFIX}"


def ssh_options(settings: Settings) -> SSHOptions:
    return SSHOptions(
        key=Path(settings.ssh_key) if settings.ssh_key else None,
        user=settings.ssh_user,
        port=settings.ssh_port,
        known_hosts=settings.known_hosts_file,
        strict_host_key_checking=settings.ssh_strict_host_key_checking,
        connect_timeout=settings.ssh_connect_timeout,
        bwlimit_kib=settings.disk_copy_bwlimit,
        control_dir=(settings.state_dir / "ssh" / "cm").absolute(),
    )


def remote_filesystem(settings: Settings) -> RemoteFilesystem:
    """The transport of ``settings.disk_transport`` (RESIZEFLOW_REMOTE_FILESYSTEM_TRANSPORT,
    or the hypervisor's default)."""
    if settings.disk_transport == "local":
        return LocalFilesystem()
    opts = ssh_options(settings)
    if settings.disk_transport == "scp":
        return ScpFilesystem(opts)
    return RsyncFilesystem(opts)


# --- command lines (pure) ----------------------------------------------------
def ssh_option_args(opts: SSHOptions) -> list[str]:
    """``-o`` options understood alike by ssh, scp and the ssh under rsync."""
    args = [
        "-o", "BatchMode=yes",
        "-o", f"ConnectTimeout={math.ceil(opts.connect_timeout)}",
        "-o", "ServerAliveInterval=5",
        "-o", "ServerAliveCountMax=3",
        "-o", f"StrictHostKeyChecking={opts.strict_host_key_checking}",
        "-o", f"Port={opts.port}",
        "-o", "LogLevel=ERROR",
    ]  # fmt: skip
    if opts.known_hosts is not None:
        args += ["-o", f"UserKnownHostsFile={opts.known_hosts}"]
    if control_path(opts) is not None:
        args += [
            "-o", "ControlMaster=auto",
            "-o", f"ControlPath={control_path(opts)}",
            "-o", f"ControlPersist={opts.control_persist}",
        ]  # fmt: skip
    if opts.key is not None:
        args += ["-i", str(opts.key), "-o", "IdentitiesOnly=yes"]
    if opts.user:
        args += ["-o", f"User={opts.user}"]
    return args


def control_path(opts: SSHOptions) -> str | None:
    """The shared connections' socket path; None when sharing is off or the
    directory is too deep for the socket's path to fit a unix socket's."""
    if opts.control_dir is None:
        return None
    path = f"{opts.control_dir}/%C"  # %C: a 40-character hash of host, port and user
    # ssh first binds the socket under the expanded path plus a random suffix.
    expanded = len(path) - len("%C") + _CONTROL_HASH
    return path if expanded + _CONTROL_BIND_SUFFIX < _SOCKET_PATH_MAX else None


def ssh_argv(opts: SSHOptions, host: RemoteHost, command: str) -> list[str]:
    # "--" keeps an address from ever being read as an option.
    return ["ssh", *ssh_option_args(opts), "--", host.address, command]


def rsync_argv(opts: SSHOptions, src: Path, host: RemoteHost, dest: PurePosixPath) -> list[str]:
    # -S: holes stay holes. --inplace: write straight into the .part file, so an
    # interrupted copy leaves its data there and the next run's delta transfer
    # sends only what is missing or different (a stale .part is corrected, not
    # trusted, unlike --append). -t: a finished .part keeps the source's mtime,
    # so a retry whose rename was lost skips the data by rsync's quick check.
    # -s: the remote path is not parsed by the remote shell, whatever rsync version.
    args = ["rsync", "-S", "-t", "-s", "--inplace", "--stats", "--no-human-readable"]
    args.append(f"--timeout={math.ceil(opts.io_timeout)}")
    if opts.bwlimit_kib:
        args.append(f"--bwlimit={opts.bwlimit_kib}")
    args += ["-e", shlex.join(["ssh", *ssh_option_args(opts)])]
    return [*args, "--", str(src), f"{host.bracketed}:{dest}"]


def scp_argv(opts: SSHOptions, src: Path, host: RemoteHost, dest: PurePosixPath) -> list[str]:
    # scp speaks SFTP (OpenSSH 9+), so the remote path is taken literally. It
    # cannot resume: a retry rewrites the .part file from its start.
    args = ["scp", "-q", "-p", *ssh_option_args(opts)]
    if opts.bwlimit_kib:
        args += ["-l", str(opts.bwlimit_kib * 8)]  # scp counts Kbit/s
    return [*args, "--", str(src), f"{host.bracketed}:{dest}"]


def remote_sh(script: str, *args: str) -> str:
    """A command line that runs ``script`` under sh with ``args`` as $1.., quoted once."""
    return shlex.join(["sh", "-c", script, "sh", *args])


def _tail(stderr: str) -> str:
    text = " ".join(line.strip() for line in stderr.strip().splitlines() if line.strip())
    return text[-_STDERR_TAIL:] or "no error output"


def classify(
    host: RemoteHost,
    op: str,
    returncode: int,
    stderr: str,
    *,
    link_codes: frozenset[int] = frozenset({_SSH_FAILED}),
    path: str = "",
) -> ResizeflowError:
    """The error a failed ssh, rsync or scp run stands for (pure)."""
    reason = _tail(stderr)
    if _DISK_FULL.search(stderr):
        return RemoteDiskFull(host=host.name, path=path or "?", reason=reason)
    if _AUTH_FAILED.search(stderr):
        return RemoteFilesystemError(op=op, host=host.name, reason=f"SSH refused: {reason}")
    if returncode in link_codes or returncode < 0:
        if _UNRESOLVED.search(stderr):
            # NOTE: the address is the one the dest advertised at its start, so
            # the fix is a setting on the dest, not here: say which.
            reason += (
                f" ({host.address} is the address {host.name} advertises: set "
                f"RESIZEFLOW_MIGRATION_ADDRESS on {host.name} to one other hosts can resolve)"
            )
        return RemoteHostUnreachable(host=host.name, address=host.address, reason=reason)
    return RemoteFilesystemError(op=op, host=host.name, reason=f"exit {returncode}: {reason}")


def rsync_stats(stdout: str) -> tuple[int, int]:
    found = {k: int(re.sub(r"[,.]", "", v)) for k, v in _RSYNC_STAT.findall(stdout)}
    return found.get("Literal", 0), found.get("Matched", 0)


# --- running them ---------------------------------------------------------------
def _with_pdeathsig(argv: list[str]) -> list[str]:
    # If the worker is SIGKILLed mid-copy, its rsync must die with it: an
    # orphan would keep writing the .part file while the re-driven step copies
    # into it too. setpriv sets PR_SET_PDEATHSIG before exec. Note that the
    # signal follows the forking thread, which for a Celery thread pool is a
    # long-lived worker thread that waits on this very process.
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--", *argv] if setpriv else argv


@dataclass
class _Run:
    returncode: int
    stdout: str
    stderr: str


def _run(argv: list[str], timeout: float | None) -> _Run:
    """Run a command in its own process group; on timeout kill the whole group."""
    proc = subprocess.Popen(
        _with_pdeathsig(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # rsync and its ssh both go, so nothing writes to the .part file
        # behind the next attempt's back.
        _kill_group(proc)
        out, err = proc.communicate()
        return _Run(-signal.SIGKILL, out, f"{err}\ntimed out after {timeout:.0f}s")
    except BaseException:
        # The worker is shutting down: same reasoning, then let it go on.
        _kill_group(proc)
        proc.wait()
        raise
    return _Run(proc.returncode, out, err)


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


class _Deadline:
    def __init__(self, timeout: float | None) -> None:
        self._end = None if timeout is None else time.monotonic() + timeout

    def left(self, host: RemoteHost, op: str) -> float | None:
        if self._end is None:
            return None
        left = self._end - time.monotonic()
        if left <= 0:
            raise RemoteHostUnreachable(
                host=host.name, address=host.address, reason=f"{op}: out of time"
            )
        return left


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
    ) -> _Run:
        self._prepare_local()
        if timeout is None:
            timeout = self.opts.command_timeout
        run = _run(ssh_argv(self.opts, host, command), timeout)
        if run.returncode == _SSH_FAILED or run.returncode < 0:
            raise classify(host, op, run.returncode, run.stderr, path=path)
        return run

    def _check(self, run: _Run, host: RemoteHost, op: str, path: str = "") -> _Run:
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
        self.execute(host, ["mkdir", "-p", "--", str(_absolute(path))])

    def exists(self, host: RemoteHost, path: PurePosixPath) -> bool:
        op = f"looking for {path}"
        run = self._ssh(host, shlex.join(["test", "-e", str(_absolute(path))]), op=op, timeout=None)
        if run.returncode not in (0, 1):
            raise classify(host, op, run.returncode, run.stderr)
        return run.returncode == 0

    def remove(self, host: RemoteHost, path: PurePosixPath) -> None:
        path = _absolute(path)
        self.execute(host, ["rm", "-rf", "--", str(path), str(part_path(path))])

    def free_bytes(self, host: RemoteHost, path: PurePosixPath) -> int:
        out = self.execute(host, ["stat", "-f", "-c", "%a %S", "--", str(_absolute(path))])
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
        dest = _absolute(dest)
        part = part_path(dest)
        try:
            st = src.stat()
        except FileNotFoundError:
            raise DiskNotFound(location=str(src)) from None
        deadline = _Deadline(timeout)
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
        run = _run(self._argv(src, host, part), timeout)
        if run.returncode == 0:
            return self._result(st, run.stdout)
        err = self._failure(host, run, dest)
        if isinstance(err, RemoteDiskFull):
            # A full disk is final: no retry will continue this .part, and its
            # blocks are what the dest needs back (other guests, a revert).
            with suppress(ResizeflowError):
                self._ssh(host, shlex.join(["rm", "-f", "--", str(part)]), op="cleanup", timeout=30)
        raise err

    def _failure(self, host: RemoteHost, run: _Run, dest: PurePosixPath) -> ResizeflowError:
        return classify(host, f"copying to {dest}", run.returncode, run.stderr, path=str(dest))

    def _argv(self, src: Path, host: RemoteHost, part: PurePosixPath) -> list[str]:
        raise NotImplementedError

    def _result(self, st: os.stat_result, stdout: str) -> CopyResult:
        return CopyResult(size=st.st_size, sent=st.st_size)


class RsyncFilesystem(_SSHFilesystem):
    """rsync over ssh: holes stay holes, and a retry resumes an interrupted copy."""

    def _argv(self, src: Path, host: RemoteHost, part: PurePosixPath) -> list[str]:
        return rsync_argv(self.opts, src, host, part)

    def _failure(self, host: RemoteHost, run: _Run, dest: PurePosixPath) -> ResizeflowError:
        return classify(
            host,
            f"copying to {dest}",
            run.returncode,
            run.stderr,
            link_codes=_RSYNC_LINK_CODES,
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

    def _failure(self, host: RemoteHost, run: _Run, dest: PurePosixPath) -> ResizeflowError:
        err = super()._failure(host, run, dest)
        if type(err) is RemoteFilesystemError:
            # SFTP reports a full disk as a bare "Failure": ask the dest itself.
            with suppress(ResizeflowError, ValueError):
                if self.free_bytes(host, dest.parent) < 1024**2:
                    return RemoteDiskFull(
                        host=host.name,
                        path=str(dest),
                        reason=_tail(run.stderr) + " (the filesystem is full)",
                    )
        return err


def _absolute(path: PurePosixPath) -> PurePosixPath:
    path = PurePosixPath(path)
    if not path.is_absolute() or "\n" in str(path) or "\0" in str(path):
        raise ValueError(f"a remote path must be absolute and on one line: {path!r}")
    return path


class LocalFilesystem:
    """Hosts whose instance directories this machine reaches in its own filesystem.

    The ``local`` transport: several simulated hosts on one machine (the demo,
    the test tier) or peers' directories mounted here. The host's address is
    not used. The commit rule is the one over SSH: data into ``.<name>.part``,
    flushed, renamed over the final name, directory flushed.
    """

    def create_dir(self, host: RemoteHost, path: PurePosixPath) -> None:
        Path(_absolute(path)).mkdir(parents=True, exist_ok=True)

    def exists(self, host: RemoteHost, path: PurePosixPath) -> bool:
        return Path(_absolute(path)).exists()

    def remove(self, host: RemoteHost, path: PurePosixPath) -> None:
        path = _absolute(path)
        for target in (Path(path), Path(part_path(path))):
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)

    def free_bytes(self, host: RemoteHost, path: PurePosixPath) -> int:
        return shutil.disk_usage(_absolute(path)).free

    def execute(
        self, host: RemoteHost, argv: Sequence[str], *, timeout: float | None = None
    ) -> str:
        run = _run(list(argv), timeout)
        if run.returncode != 0:
            raise RemoteFilesystemError(
                op=f"running {argv[0]}", host=host.name, reason=_tail(run.stderr)
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
        dest = _absolute(dest)
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
        deadline = _Deadline(timeout)
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


# --- this host's own migration address ---------------------------------------------
MIGRATION_ADDRESS, SSH_PORT = "RESIZEFLOW_MIGRATION_ADDRESS", "RESIZEFLOW_SSH_PORT"


@dataclass(frozen=True)
class Unreachable:
    """Why other hosts could not SSH to an address: what failed, and the setting to look at."""

    problem: str
    settings: tuple[str, ...]


def probe_ssh(address: str, port: int, timeout: float) -> Unreachable | None:
    """Whether ``address`` resolves and an sshd greets on ``port``, within ``timeout`` seconds.

    A TCP connection and the server's ``SSH-`` greeting, no login: the key
    and the host key are checked by every copy, and named by its error.
    """
    found: list[Unreachable | None] = []
    thread = threading.Thread(
        target=lambda: found.append(_probe_ssh(address, port, timeout)),
        name="resizeflow-ssh-probe",
        daemon=True,  # NOTE: a resolver that hangs must not hold the worker's exit
    )
    thread.start()
    # Every socket call is bounded by the deadline; only the resolver is not.
    thread.join(timeout + 0.5)
    if found:
        return found[0]
    return Unreachable(
        f"resolving {address} did not finish within {timeout:g}s", (MIGRATION_ADDRESS,)
    )


def _probe_ssh(address: str, port: int, timeout: float) -> Unreachable | None:
    end = time.monotonic() + timeout
    try:
        infos = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return Unreachable(f"{address} does not resolve ({reason})", (MIGRATION_ADDRESS,))
    failures: list[str] = []
    for family, kind, proto, _name, sockaddr in infos:
        ip = sockaddr[0]
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(max(0.01, end - time.monotonic()))
                sock.connect(sockaddr)
                greeting = _first_line(sock, end)
        except TimeoutError:
            failures.append(f"{ip}: no answer within {timeout:g}s")
            continue
        except OSError as exc:
            failures.append(f"{ip}: {exc.strerror or exc}")
            continue
        if greeting.startswith(b"SSH-"):
            return None
        said = (
            f"it said {greeting[:40].decode('ascii', 'replace')!r}"
            if greeting
            else f"no greeting within {timeout:g}s"
        )
        return Unreachable(
            f"{address} port {port} accepts connections, but not as an SSH server ({said})",
            (SSH_PORT,),
        )
    return Unreachable(
        f"no SSH server answers at {address} port {port} ({'; '.join(failures)})",
        (MIGRATION_ADDRESS, SSH_PORT),
    )


def _first_line(sock: socket.socket, end: float) -> bytes:
    """The server's first line (an sshd greets first), or what came before the deadline."""
    data = b""
    while b"\n" not in data and len(data) < 255:
        left = end - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            chunk = sock.recv(255 - len(data))
        except TimeoutError:
            break
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0].rstrip(b"\r")


# --- shared storage -------------------------------------------------------------
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
