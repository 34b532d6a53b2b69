"""Volumes as sparse raw files, served over NBD by ``qemu-storage-daemon``.

Each volume is ``<state>/volumes/<id>.img``. A host's connection is an NBD
export of that file under a random name, made for that host alone and
recorded in ``<state>/connections.json``; the daemon is driven over its QMP
socket. The daemon keeps its exports in memory only, so the record is the
truth and :meth:`QsdStorage.start` makes the daemon match it: every recorded
connection is exported again, and any export not recorded is removed.

Order matters for a crash at any point: a connection is recorded before its
export is added, and forgotten before its export is removed. A crash in
between leaves a record the next start exports (an initialize that is
retried anyway), or an export the next start removes (a terminate whose
effect stands), never an export nobody knows of.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resizeflow import errors
from resizeflow.storage.base import GIB, Capacity, ConnectionInfo
from resizeflow.storage.qmp import QmpClient, QmpError

log = logging.getLogger(__name__)

START_TIMEOUT = 30.0
EXPORT_GONE_TIMEOUT = 30.0


@dataclass(frozen=True)
class QsdConfig:
    """Where the storage host keeps its files and where its NBD server listens."""

    state_dir: Path
    address: str  # what hosts connect to (in every connection_info)
    port: int
    bind: str  # where the NBD server listens
    name: str = "storage-1"
    binary: str = "qemu-storage-daemon"


def _node(volume_id: str) -> str:
    # QEMU's node names are at most 31 characters and start with a letter.
    return "v" + hashlib.sha256(volume_id.encode()).hexdigest()[:24]


def _export_id(volume_id: str, host: str, name: str) -> str:
    # The name is part of the id: a stale export left by a crash (same volume
    # and host, older name) is told apart from the one recorded now.
    return "e" + hashlib.sha256(f"{volume_id}\0{host}\0{name}".encode()).hexdigest()[:24]


def monitor_path(state_dir: Path) -> Path:
    """The daemon's QMP socket: in the state dir, unless that path is too long for one.

    A unix socket's path has at most 107 bytes; a deep state dir (a test's
    temporary directory) gets a socket in the temporary directory instead,
    named after the state dir so that a restarted storage host finds it.
    """
    inside = state_dir.resolve() / "qmp.sock"
    if len(os.fsencode(inside)) < 100:
        return inside
    digest = hashlib.sha256(os.fsencode(state_dir.resolve())).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"resizeflow-qsd-{digest}.sock"


def kill_daemon(state_dir: Path) -> None:
    """SIGKILL the daemon a storage host in ``state_dir`` left running, if any.

    For a stack's teardown after its storage host was killed: the daemon runs
    in a session of its own and outlives it. The pid is checked to be that
    daemon (its command line names this state dir's socket) before the kill.
    """
    pidfile = state_dir / "qemu-storage-daemon.pid"
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if os.fsencode(monitor_path(state_dir)) in cmdline:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _check_id(volume_id: str) -> str:
    try:
        return str(uuid.UUID(volume_id))
    except ValueError:
        raise errors.VolumeNotFound(volume_id=volume_id) from None


class QsdStorage:
    """The storage host's backend (a :class:`~resizeflow.storage.base.BlockStorage`)."""

    def __init__(self, config: QsdConfig) -> None:
        self.config = config
        self.volumes_dir = config.state_dir / "volumes"
        self.records = config.state_dir / "connections.json"
        self.socket = monitor_path(config.state_dir)
        self.pidfile = config.state_dir / "qemu-storage-daemon.pid"
        self._lock = threading.RLock()
        self._qmp = QmpClient(self.socket)
        self._process: subprocess.Popen[bytes] | None = None

    # -- the daemon --------------------------------------------------------------
    def start(self) -> None:
        """Reach the daemon (starting one if none answers), then export what is recorded."""
        self.volumes_dir.mkdir(parents=True, exist_ok=True)
        with self._lock:
            try:
                self._qmp.connect()
                log.info("storage %s: reusing the running daemon", self.config.name)
            except OSError:
                self._spawn()
            self._reconcile()

    def _spawn(self) -> None:
        self.socket.unlink(missing_ok=True)
        logfile = (self.config.state_dir / "qemu-storage-daemon.log").open("ab")
        argv = [
            self.config.binary,
            "--chardev",
            f"socket,id=qmp,path={self.socket},server=on,wait=off",
            "--monitor",
            "chardev=qmp",
            "--nbd-server",
            f"addr.type=inet,addr.host={self.config.bind},addr.port={self.config.port}",
            "--pidfile",
            str(self.pidfile.resolve()),
        ]
        # Its own session: a signal to the worker's process group leaves the
        # exports up; the next start reuses the daemon and reconciles.
        self._process = subprocess.Popen(
            argv, stdout=logfile, stderr=logfile, start_new_session=True
        )
        logfile.close()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self._process.poll() is not None:
                tail = (self.config.state_dir / "qemu-storage-daemon.log").read_text()[-500:]
                raise errors.StorageError(reason=f"qemu-storage-daemon exited: {tail.strip()}")
            try:
                self._qmp.connect()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise errors.StorageError(reason="qemu-storage-daemon did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop the daemon: every export goes with it (the record stays)."""
        with self._lock:
            if self._qmp.connected:
                with contextlib.suppress(OSError, QmpError):
                    self._qmp.execute("quit")
                self._qmp.close()
            if self._process is not None:
                self._process.wait(timeout=30)
                self._process = None

    def _call(self, command: str, **arguments: Any) -> Any:
        if not self._qmp.connected:
            self._qmp.connect()
        try:
            return self._qmp.execute(command, **arguments)
        except QmpError as exc:
            raise errors.StorageError(reason=str(exc)) from None

    # -- the record ----------------------------------------------------------------
    def _read(self) -> dict[str, dict[str, str]]:
        try:
            found: dict[str, dict[str, str]] = json.loads(self.records.read_text())
        except FileNotFoundError:
            return {}
        return found

    def _write(self, records: dict[str, dict[str, str]]) -> None:
        tmp = self.records.with_suffix(".tmp")
        with tmp.open("w") as f:
            json.dump({k: v for k, v in records.items() if v}, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.records)

    # -- exports ----------------------------------------------------------------
    def daemon_exports(self) -> list[dict[str, Any]]:
        """The daemon's own list of its exports (``query-block-exports``), as it answers.

        The monitor takes one client at a time, so an operator or a test asks
        through the storage host's connection.
        """
        with self._lock:
            found: list[dict[str, Any]] = self._call("query-block-exports")
            return found

    def _exports(self) -> dict[str, str]:
        """The daemon's live exports: id -> node name."""
        return {
            e["id"]: e["node-name"]
            for e in self._call("query-block-exports")
            if not e.get("shutting-down")
        }

    def _nodes(self) -> set[str]:
        """The daemon's block nodes (a volume's file is open while its node is there)."""
        return {n.get("node-name") for n in self._call("query-named-block-nodes", flat=True)}

    def _ensure_node(self, volume_id: str) -> None:
        if _node(volume_id) in self._nodes():
            return
        path = self._path(volume_id)
        if not path.exists():
            raise errors.VolumeNotFound(volume_id=volume_id)
        self._call(
            "blockdev-add",
            driver="raw",
            **{"node-name": _node(volume_id)},
            file={"driver": "file", "filename": str(path.resolve())},
        )

    def _add_export(self, volume_id: str, host: str, name: str) -> None:
        export = _export_id(volume_id, host, name)
        if export in self._exports():
            return
        self._ensure_node(volume_id)
        self._call(
            "block-export-add",
            type="nbd",
            id=export,
            **{"node-name": _node(volume_id)},
            name=name,
            writable=True,
        )

    def _del_export(self, export: str) -> None:
        """Remove an export and cut its clients off, then wait until it is gone."""
        try:
            self._call("block-export-del", id=export, mode="hard")
        except errors.StorageError:
            if export not in self._exports():
                return  # gone already: a repeated terminate
            raise
        deadline = time.monotonic() + EXPORT_GONE_TIMEOUT
        while any(e["id"] == export for e in self._call("query-block-exports")):
            if time.monotonic() > deadline:
                raise errors.StorageError(reason=f"export {export} is still shutting down")
            time.sleep(0.02)

    def _release_node(self, volume_id: str) -> None:
        """Close the volume's file once no export uses it."""
        node = _node(volume_id)
        if node in self._exports().values():
            return
        if node in self._nodes():
            self._call("blockdev-del", **{"node-name": node})

    def _reconcile(self) -> None:
        records = self._read()
        wanted = {
            _export_id(vol, host, name): vol
            for vol, hosts in records.items()
            for host, name in hosts.items()
        }
        live = self._exports()
        for export in live:
            if export not in wanted:
                log.info("storage %s: removing unrecorded export %s", self.config.name, export)
                self._del_export(export)
        for vol, hosts in records.items():
            for host, name in hosts.items():
                self._add_export(vol, host, name)
        for vol in {p.stem for p in self.volumes_dir.glob("*.img")}:
            if vol not in records:
                self._release_node(vol)
        log.info("storage %s: %d connections exported", self.config.name, len(wanted))

    # -- BlockStorage ------------------------------------------------------------
    def _path(self, volume_id: str) -> Path:
        return self.volumes_dir / f"{_check_id(volume_id)}.img"

    def create_volume(self, volume_id: str, size_gb: int) -> None:
        path = self._path(volume_id)
        with self._lock:
            if path.exists():
                if path.stat().st_size == size_gb * GIB:
                    return
                raise errors.StorageError(reason=f"volume {volume_id} exists with another size")
            capacity = self.capacity()
            if size_gb * GIB > capacity.free_bytes:
                raise errors.VolumeSizeExceedsFreeSpace(
                    size=size_gb, host=self.config.name, free=capacity.free_gb
                )
            tmp = path.with_suffix(".new")
            with tmp.open("wb") as f:
                f.truncate(size_gb * GIB)  # sparse: no block is written
                os.fsync(f.fileno())
            os.replace(tmp, path)

    def delete_volume(self, volume_id: str) -> None:
        path = self._path(volume_id)
        with self._lock:
            for host in list(self._read().get(volume_id, {})):
                self.terminate_connection(volume_id, host)
            self._release_node(volume_id)
            path.unlink(missing_ok=True)

    def initialize_connection(self, volume_id: str, host: str) -> ConnectionInfo:
        path = self._path(volume_id)
        with self._lock:
            records = self._read()
            name = records.get(volume_id, {}).get(host)
            if name is None:
                if not path.exists():
                    raise errors.VolumeNotFound(volume_id=volume_id)
                name = secrets.token_urlsafe(32)
                records.setdefault(volume_id, {})[host] = name
                self._write(records)  # recorded first: see the module's docstring
            self._add_export(volume_id, host, name)
            return ConnectionInfo(
                host=self.config.address, port=self.config.port, name=name, volume_id=volume_id
            )

    def terminate_connection(self, volume_id: str, host: str) -> None:
        _check_id(volume_id)
        with self._lock:
            records = self._read()
            name = records.get(volume_id, {}).pop(host, None)
            if name is None:
                return
            self._write(records)  # forgotten first: see the module's docstring
            self._del_export(_export_id(volume_id, host, name))
            self._release_node(volume_id)

    def connections(self, volume_id: str) -> list[str]:
        _check_id(volume_id)
        with self._lock:
            live = self._exports()
            hosts = self._read().get(volume_id, {})
            return sorted(h for h, name in hosts.items() if _export_id(volume_id, h, name) in live)

    def capacity(self) -> Capacity:
        """The filesystem's free space less what existing volumes may still fill."""
        fs = os.statvfs(self.volumes_dir)
        promised = 0
        for path in self.volumes_dir.glob("*.img"):
            st = path.stat()
            promised += max(0, st.st_size - st.st_blocks * 512)
        free = fs.f_bavail * fs.f_frsize - promised
        return Capacity(total_bytes=fs.f_blocks * fs.f_frsize, free_bytes=max(0, free))
