"""The command lines of the SSH transports, and what their failures mean (pure).

Every remote command runs through ``ssh`` with the deployment's key, in batch
mode, against a known_hosts file of the deployment's own. rsync and scp carry
the same options to the ssh under them.

A connection that cannot be made or that drops (sshd down, a wrong port, a
timeout) is a :class:`~resizeflow.errors.RemoteHostUnreachable`, which is
transient. A full dest filesystem is a :class:`~resizeflow.errors.RemoteDiskFull`,
final. Other failures are a final :class:`~resizeflow.errors.RemoteFilesystemError`.
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from resizeflow.conf import Settings
from resizeflow.errors import (
    RemoteDiskFull,
    RemoteFilesystemError,
    RemoteHostUnreachable,
    ResizeflowError,
)
from resizeflow.virt.remotefs.base import RemoteHost

STDERR_TAIL = 600
# A unix socket's path must fit sun_path: 108 bytes on Linux, its NUL included.
_SOCKET_PATH_MAX = 108
# ssh's %C (a SHA-1 hex digest), and the ".XXXXXXXXXXXXXXXX" ssh binds under first.
_CONTROL_HASH = 40
_CONTROL_BIND_SUFFIX = 17

# ssh's own exit status when the connection (not the remote command) failed.
SSH_FAILED = 255
# rsync's exit codes for a broken stream or a timeout: the link, not the data.
RSYNC_LINK_CODES = frozenset({5, 10, 12, 20, 30, 35, SSH_FAILED})
_DISK_FULL = re.compile(r"No space left on device|Disk quota exceeded|ENOSPC", re.I)
# Misconfiguration that retrying cannot fix: someone must act on the key or the host key.
_AUTH_FAILED = re.compile(
    r"Permission denied \([a-z]|Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED"
    r"|No such identity|Load key|Too many authentication failures",
)
_RSYNC_STAT = re.compile(r"^(Literal|Matched) data: ([\d,.]+) bytes", re.M)
_UNRESOLVED = re.compile(r"Could not resolve hostname")


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


def tail(stderr: str) -> str:
    text = " ".join(line.strip() for line in stderr.strip().splitlines() if line.strip())
    return text[-STDERR_TAIL:] or "no error output"


def classify(
    host: RemoteHost,
    op: str,
    returncode: int,
    stderr: str,
    *,
    link_codes: frozenset[int] = frozenset({SSH_FAILED}),
    path: str = "",
) -> ResizeflowError:
    """The error a failed ssh, rsync or scp run stands for (pure)."""
    reason = tail(stderr)
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
