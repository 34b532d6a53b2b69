"""A volume served over NBD by a real ``qemu-storage-daemon``, for the tests.

A raw file exported read-write on 127.0.0.1 on a free port: what the
block-storage service hands a compute host, as the ``connection_info`` the
storage service returns (``driver_volume_type`` ``nbd``). The test reads the
file itself to see what the guest wrote.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from resizeflow.devstack.hosts import free_port

MiB = 1024**2
DAEMON = "qemu-storage-daemon"
_START_TIMEOUT = 30.0


@dataclass(frozen=True)
class NbdVolume:
    volume_id: str
    path: Path
    host: str
    port: int
    export: str
    size: int

    def connection_info(self) -> dict[str, Any]:
        """The Cinder-shaped connection_info a storage service returns for it."""
        return {
            "driver_volume_type": "nbd",
            "data": {
                "host": self.host,
                "port": self.port,
                "name": self.export,
                "volume_id": self.volume_id,
                "access_mode": "rw",
            },
        }

    def read(self, offset: int, size: int) -> bytes:
        """What the volume holds, read from its file on the storage side."""
        with self.path.open("rb") as f:
            f.seek(offset)
            return f.read(size)


def require_storage_daemon() -> None:
    if shutil.which(DAEMON) is None:
        if os.environ.get("CI"):
            pytest.fail(f"{DAEMON} is missing, and CI needs it (make vm-deps)")
        pytest.skip(f"{DAEMON} is missing (make vm-deps)")


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def nbd_volume(root: Path, size: int = 32 * MiB) -> Iterator[NbdVolume]:
    """A blank volume of ``size`` bytes in ``root``, exported until the block ends."""
    require_storage_daemon()
    volume_id = str(uuid.uuid4())
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"volume-{volume_id}"
    with path.open("wb") as f:
        f.truncate(size)
    port = free_port(("127.0.0.1",))
    export = f"volume-{volume_id}"
    log = (root / f"{export}.log").open("wb")
    args = (
        ("--blockdev", f"driver=file,node-name=file0,filename={path}"),
        ("--blockdev", "driver=raw,node-name=vol0,file=file0"),
        ("--nbd-server", f"addr.type=inet,addr.host=127.0.0.1,addr.port={port}"),
        ("--export", f"type=nbd,id=exp0,node-name=vol0,name={export},writable=on"),
    )
    cmd = [DAEMON, *(word for pair in args for word in pair)]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + _START_TIMEOUT
        while not _listening(port):
            if proc.poll() is not None:
                raise AssertionError(f"{DAEMON} exited: {(root / f'{export}.log').read_text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{DAEMON} did not listen on port {port}")
            time.sleep(0.1)
        yield NbdVolume(volume_id, path, "127.0.0.1", port, export, size)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
