"""What a disk move needs of another host's files, whatever the transport.

Paths are absolute, on that host. A copy never puts a partial file under its
final name: it writes ``.<name>.part`` next to the final path (:func:`part_path`),
then flushes it and renames it over the final name. A file under a final name
is therefore always complete, and a retried copy continues the same
temporary file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

PART_SUFFIX = ".part"


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


def absolute(path: PurePosixPath) -> PurePosixPath:
    path = PurePosixPath(path)
    if not path.is_absolute() or "\n" in str(path) or "\0" in str(path):
        raise ValueError(f"a remote path must be absolute and on one line: {path!r}")
    return path
