"""The storage host's backend on a real ``qemu-storage-daemon``, checked with QEMU's own tools.

Data goes in through one host's NBD export and comes out through another's;
a terminated export refuses the next connection; the daemon's own list of
exports (``query-block-exports``) shows no double and no leftover; a
restarted storage host serves the recorded connections again.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from resizeflow import errors
from resizeflow.storage.base import ConnectionInfo
from resizeflow.storage.qsd import QsdConfig, QsdStorage, kill_daemon

pytestmark = pytest.mark.skipif(
    shutil.which("qemu-storage-daemon") is None or shutil.which("qemu-io") is None,
    reason="needs qemu-storage-daemon and qemu-io (Debian qemu-system-common, qemu-utils)",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def config(tmp_path: Path) -> QsdConfig:
    return QsdConfig(
        state_dir=tmp_path / "storage", address="127.0.0.1", port=free_port(), bind="127.0.0.1"
    )


@pytest.fixture
def storage(config: QsdConfig) -> Iterator[QsdStorage]:
    backend = QsdStorage(config)
    backend.start()
    try:
        yield backend
    finally:
        backend.stop()
        kill_daemon(config.state_dir)  # one a failed test left running


def qemu_io(info: ConnectionInfo, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["qemu-io", "-f", "raw", info.url, "-c", command],
        capture_output=True,
        text=True,
        timeout=60,
    )


def reachable(info: ConnectionInfo) -> bool:
    done = subprocess.run(
        ["qemu-img", "info", "--output=json", info.url], capture_output=True, text=True, timeout=60
    )
    return done.returncode == 0


def written(info: ConnectionInfo, pattern: str, offset: str = "0") -> None:
    done = qemu_io(info, f"write -P {pattern} {offset} 64k")
    assert done.returncode == 0 and "wrote 65536/65536" in done.stdout, done.stderr


def reads_back(info: ConnectionInfo, pattern: str, offset: str = "0") -> bool:
    done = qemu_io(info, f"read -P {pattern} {offset} 64k")
    # qemu-io reports a pattern mismatch on stdout and may still exit 0.
    return done.returncode == 0 and "read 65536/65536" in done.stdout and "fail" not in done.stdout


def test_data_follows_the_volume_from_host_a_to_host_b(storage: QsdStorage) -> None:
    vol = str(uuid.uuid4())
    storage.create_volume(vol, 1)
    a = storage.initialize_connection(vol, "compute-a")
    assert a.to_dict() == {
        "driver_volume_type": "nbd",
        "data": {
            "host": "127.0.0.1",
            "port": storage.config.port,
            "name": a.name,
            "volume_id": vol,
            "access_mode": "rw",
        },
    }
    assert len(a.name) >= 32
    written(a, "0xab")
    assert reads_back(a, "0xab")
    assert not reads_back(a, "0xcd")  # the read check itself can fail

    storage.terminate_connection(vol, "compute-a")
    assert not reachable(a)
    assert storage.connections(vol) == []

    b = storage.initialize_connection(vol, "compute-b")
    assert b.name != a.name
    assert reads_back(b, "0xab")
    assert not reachable(a)  # B's export is not A's under another name
    assert storage.connections(vol) == ["compute-b"]


def test_terminate_cuts_a_connected_client_off(storage: QsdStorage) -> None:
    vol = str(uuid.uuid4())
    storage.create_volume(vol, 1)
    a = storage.initialize_connection(vol, "compute-a")
    # A client that stays connected (qemu-io reading commands from its stdin).
    client = subprocess.Popen(
        ["qemu-io", "-f", "raw", a.url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert client.stdin is not None and client.stdout is not None
        client.stdin.write("write -P 0x11 0 64k\n")
        client.stdin.flush()
        assert "wrote 65536/65536" in client.stdout.readline()
        storage.terminate_connection(vol, "compute-a")
        client.stdin.write("write -P 0x22 0 64k\nquit\n")
        client.stdin.flush()
        rest = client.communicate(timeout=60)[0]
    finally:
        if client.poll() is None:
            client.kill()
    assert "wrote 65536/65536" not in rest, rest
    b = storage.initialize_connection(vol, "compute-b")
    assert reads_back(b, "0x11")


def test_repeated_initialize_and_terminate_neither_double_nor_leave_exports(
    storage: QsdStorage, config: QsdConfig
) -> None:
    vol = str(uuid.uuid4())
    storage.create_volume(vol, 1)
    storage.create_volume(vol, 1)  # a repeated create is a no-op
    first = storage.initialize_connection(vol, "compute-a")
    again = storage.initialize_connection(vol, "compute-a")
    assert again == first
    assert len(storage.daemon_exports()) == 1
    storage.initialize_connection(vol, "compute-b")
    assert len(storage.daemon_exports()) == 2
    assert storage.connections(vol) == ["compute-a", "compute-b"]

    storage.terminate_connection(vol, "compute-a")
    storage.terminate_connection(vol, "compute-a")
    assert len(storage.daemon_exports()) == 1
    storage.terminate_connection(vol, "compute-b")
    assert storage.daemon_exports() == []
    assert storage.connections(vol) == []

    storage.delete_volume(vol)
    storage.delete_volume(vol)
    assert not (config.state_dir / "volumes" / f"{vol}.img").exists()
    with pytest.raises(errors.VolumeNotFound):
        storage.initialize_connection(vol, "compute-a")


def test_a_restarted_storage_host_serves_the_recorded_connections(config: QsdConfig) -> None:
    vol = str(uuid.uuid4())
    storage = QsdStorage(config)
    storage.start()
    try:
        storage.create_volume(vol, 1)
        gone = storage.initialize_connection(vol, "compute-a")
        storage.terminate_connection(vol, "compute-a")
        kept = storage.initialize_connection(vol, "compute-b")
        written(kept, "0x5a", "1M")
    finally:
        storage.stop()
    assert not reachable(kept)  # the daemon's exports died with it

    restarted = QsdStorage(config)
    restarted.start()
    try:
        assert reachable(kept)
        assert reads_back(kept, "0x5a", "1M")
        assert not reachable(gone)
        assert len(restarted.daemon_exports()) == 1
        assert restarted.initialize_connection(vol, "compute-b") == kept
        assert len(restarted.daemon_exports()) == 1
    finally:
        restarted.stop()
        kill_daemon(config.state_dir)


def test_a_storage_host_that_lost_its_process_reuses_the_daemon_and_drops_strays(
    config: QsdConfig,
) -> None:
    """The worker died but its daemon lives on: an export the record no longer
    names (a terminate cut short after forgetting it) is removed at the next start."""
    vol = str(uuid.uuid4())
    storage = QsdStorage(config)
    storage.start()
    try:
        storage.create_volume(vol, 1)
        stray = storage.initialize_connection(vol, "compute-a")
        storage._write({})  # the record forgot it; the export is still up
        storage._qmp.close()  # the process that held the monitor is gone
        assert reachable(stray)
        again = QsdStorage(config)
        again.start()  # finds the running daemon
        assert again._process is None  # reused, not a second daemon
        assert not reachable(stray)
        assert again.daemon_exports() == []
    finally:
        kill_daemon(config.state_dir)


def test_free_space_is_checked_on_create(storage: QsdStorage, config: QsdConfig) -> None:
    free = storage.capacity().free_gb
    vol = str(uuid.uuid4())
    with pytest.raises(errors.VolumeSizeExceedsFreeSpace):
        storage.create_volume(vol, free + 1)
    assert not (config.state_dir / "volumes" / f"{vol}.img").exists()
    storage.create_volume(vol, 1)
    # A sparse volume holds no blocks yet, but its size is promised.
    assert storage.capacity().free_bytes <= (free + 1) * 1024**3 - 1024**3
