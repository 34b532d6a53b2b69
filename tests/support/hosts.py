"""Compute hosts that share nothing, on one machine, for the tests.

The hosts themselves are :mod:`resizeflow.devstack.hosts`. Like the
service-backed fixtures, these skip when sshd, rsync, scp or qemu-img is
missing, except in CI (``CI`` set), where that is a failure.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from resizeflow.devstack.hosts import ADDRESSES, Host, Hosts, free_port, keygen, missing_tools
from resizeflow.devstack.hosts import start_hosts as _start_hosts

__all__ = [
    "ADDRESSES",
    "Host",
    "Hosts",
    "file_sha256",
    "free_port",
    "keygen",
    "require_host_tools",
    "require_root",
    "start_hosts",
]


def file_sha256(path: Path) -> str:
    """A file's SHA-256, read in blocks: how the tests tell a disk arrived whole."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(4 * 1024**2):
            digest.update(block)
    return digest.hexdigest()


def require_host_tools() -> None:
    missing = missing_tools()
    if not missing:
        return
    why = f"missing {', '.join(missing)} (make hosts-deps)"
    if os.environ.get("CI"):
        pytest.fail(f"two-host tests need {why}, and CI needs them")
    pytest.skip(why)


def require_root(what: str) -> None:
    if os.geteuid() == 0:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} needs root, and CI needs it")
    pytest.skip(f"{what} needs root")


def start_hosts(root: Path, names: tuple[str, ...]) -> Hosts:
    """One sshd per named host (skips without the tools, fails in CI)."""
    require_host_tools()
    return _start_hosts(root, names)


@pytest.fixture(scope="module")
def two_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosts]:
    """Two hosts, ``host-a`` at 127.0.0.11 and ``host-b`` at 127.0.0.12."""
    hosts = start_hosts(tmp_path_factory.mktemp("hosts"), ("host-a", "host-b"))
    try:
        yield hosts
    finally:
        hosts.stop_all()
