"""The hypervisor of one compute host, through libvirt-python.

Works against ``test:///...`` (the libvirt test driver) and ``qemu:///system`` by
configuration alone. Each instance lives in ``<instances_dir>/<uuid>`` as a raw
``disk`` and the ``libvirt.xml`` it was last defined from.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
import time
import uuid as uuidlib
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import libvirt

from resizeflow.drivers.base import DomainInfo, InstanceSpec, NodeResources
from resizeflow.errors import ConfigError, DiskNotFound, InvalidUUID, TransientError, VirtError
from resizeflow.states import PowerState

GiB = 1024**3
_CHUNK = 1024**2
_RESIZE = "_resize"
_CLEANUP_ATTEMPTS = 5
_CLEANUP_DELAY = 0.2

_TRANSIENT_CODES = frozenset(
    {
        libvirt.VIR_ERR_NO_CONNECT,
        libvirt.VIR_ERR_SYSTEM_ERROR,
        libvirt.VIR_ERR_RPC,
        libvirt.VIR_ERR_INTERNAL_ERROR,
        libvirt.VIR_ERR_OPERATION_TIMEOUT,
    }
)
_VIRT_TYPES = {"test": "test", "qemu": "kvm"}
_MISSING = frozenset({libvirt.VIR_ERR_NO_DOMAIN})
_POWER_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: PowerState.NOSTATE,
    libvirt.VIR_DOMAIN_RUNNING: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: PowerState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: PowerState.SHUTDOWN,
    libvirt.VIR_DOMAIN_SHUTOFF: PowerState.SHUTDOWN,
    libvirt.VIR_DOMAIN_CRASHED: PowerState.CRASHED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: PowerState.SUSPENDED,
}
# name and uuid come from a validated UUID; the attributes are quoted on use.
_DOMAIN_XML = """<domain type={type}>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <memory unit='MiB'>{memory}</memory>
  <vcpu>{vcpus}</vcpu>
  <os><type{arch}>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file={disk}/>
      <target dev='vda' bus='virtio'/>
    </disk>
  </devices>
</domain>
"""


def _silence(_ctx: Any, _err: Any) -> None:
    """Errors arrive as exceptions; libvirt's default handler would also print them."""


def canonical_uuid(value: str) -> str:
    """``value`` if it is a UUID in canonical lowercase form, else InvalidUUID."""
    try:
        canonical = str(uuidlib.UUID(value))
    except (ValueError, TypeError, AttributeError):
        raise InvalidUUID(uuid=value) from None
    if canonical != value:
        raise InvalidUUID(uuid=value)
    return canonical


def _code(exc: Any) -> int:
    return int(exc.get_error_code() or 0)


def _translate(exc: Any) -> VirtError | TransientError:
    reason = exc.get_error_message() or str(exc)
    if _code(exc) in _TRANSIENT_CODES or exc.get_error_domain() == libvirt.VIR_FROM_RPC:
        return TransientError(reason=reason)
    return VirtError(reason=reason)


def _sparse_copy(src: Path, dst: Path) -> None:
    """Copy only the data extents of ``src``; holes stay holes in ``dst``."""
    part = dst.with_name(dst.name + ".part")
    with open(src, "rb", buffering=0) as fin, open(part, "wb", buffering=0) as fout:
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
                chunk = os.pread(fin.fileno(), min(_CHUNK, pos - data), data)
                if not chunk:  # truncated under us; the final truncate keeps the size
                    break
                data += os.pwrite(fout.fileno(), chunk, data)
        fout.truncate(size)
        os.fsync(fout.fileno())
    # The rename makes a present dest disk mean "completely copied".
    os.replace(part, dst)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _rmtree_with_retries(path: Path) -> None:
    # Mirrors Nova's _cleanup_resize: NFS and busy files can fail a first rmtree.
    for attempt in range(1, _CLEANUP_ATTEMPTS + 1):
        try:
            shutil.rmtree(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            if attempt == _CLEANUP_ATTEMPTS:
                raise
            time.sleep(_CLEANUP_DELAY)


class LibvirtDriver:
    def __init__(
        self, uri: str, instances_dir: Path, *, hostname: str, virt_type: str | None = None
    ) -> None:
        self.uri = uri
        self.instances_dir = Path(instances_dir).resolve()
        self.hostname = hostname
        scheme = uri.split(":", 1)[0].split("+", 1)[0]
        self.virt_type = virt_type or _VIRT_TYPES.get(scheme, "")
        if not self.virt_type:
            raise ConfigError(f"cannot infer virt_type from libvirt URI {uri!r}; set it")
        self._lock = threading.Lock()
        self._conn_obj: Any = None

    # --- connection and errors ----------------------------------------------
    def _conn(self) -> Any:
        with self._lock:
            if self._conn_obj is None:
                libvirt.registerErrorHandler(_silence, None)
                try:
                    self._conn_obj = libvirt.open(self.uri)
                except libvirt.libvirtError as exc:
                    raise _translate(exc) from exc
            return self._conn_obj

    def _reset(self) -> None:
        with self._lock:
            conn, self._conn_obj = self._conn_obj, None
        if conn is not None:
            with suppress(libvirt.libvirtError):
                conn.close()

    def _call(self, fn: Callable[..., Any], *args: Any, ok: frozenset[int] = frozenset()) -> Any:
        """``fn(*args)``; None if libvirt fails with a code in ``ok``."""
        try:
            return fn(*args)
        except libvirt.libvirtError as exc:
            if _code(exc) in ok:
                return None
            error = _translate(exc)
            if isinstance(error, TransientError):
                # A broken connection stays broken; the retry must open a new one.
                self._reset()
            raise error from exc

    def _lookup(self, uuid: str) -> Any:
        return self._call(lambda: self._conn().lookupByUUIDString(uuid), ok=_MISSING)

    # --- paths and domains -----------------------------------------------------
    def _dir(self, uuid: str, suffix: str = "") -> Path:
        path = (self.instances_dir / (canonical_uuid(uuid) + suffix)).resolve()
        if path.parent != self.instances_dir:
            raise InvalidUUID(uuid=uuid)
        return path

    def _define(self, inst: InstanceSpec, inst_dir: Path) -> Any:
        xml = _DOMAIN_XML.format(
            type=quoteattr(self.virt_type),
            name=inst.domain_name,
            uuid=inst.uuid,
            memory=int(inst.memory_mb),
            vcpus=int(inst.vcpus),
            arch="" if self.virt_type == "test" else " arch='x86_64'",
            disk=quoteattr(str(inst_dir / "disk")),
        )
        _write_atomic(inst_dir / "libvirt.xml", xml)
        return self._call(lambda: self._conn().defineXML(xml))

    def _start(self, dom: Any) -> None:
        # create() on a running domain is an internal error, which would read as transient.
        if not self._call(dom.isActive):
            self._call(dom.create)

    def _stop(self, dom: Any) -> None:
        if self._call(dom.isActive, ok=_MISSING):
            self._call(dom.destroy, ok=_MISSING | {libvirt.VIR_ERR_OPERATION_INVALID})

    def _undefine(self, uuid: str) -> None:
        dom = self._lookup(uuid)
        if dom is not None:
            self._stop(dom)
            flags = libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
            self._call(dom.undefineFlags, flags, ok=_MISSING)

    # --- VirtDriver ------------------------------------------------------------
    def node_resources(self) -> NodeResources:
        info = self._call(lambda: self._conn().getInfo())
        self.instances_dir.mkdir(parents=True, exist_ok=True)
        return NodeResources(
            hypervisor_hostname=self.hostname,
            vcpus=int(info[2]),
            memory_mb=int(info[1]),
            local_gb=shutil.disk_usage(self.instances_dir).free // GiB,
        )

    def spawn(self, inst: InstanceSpec, *, power_on: bool) -> None:
        inst_dir = self._dir(inst.uuid)
        inst_dir.mkdir(parents=True, exist_ok=True)
        disk = inst_dir / "disk"
        if not disk.exists():
            disk.touch()
            os.truncate(disk, inst.root_gb * GiB)
        dom = self._define(inst, inst_dir)
        if power_on:
            self._start(dom)

    def power_off(self, inst: InstanceSpec) -> None:
        dom = self._lookup(canonical_uuid(inst.uuid))
        if dom is not None:
            self._stop(dom)

    def power_on(self, inst: InstanceSpec) -> None:
        dom = self._lookup(canonical_uuid(inst.uuid))
        if dom is None:
            raise VirtError(reason=f"domain {inst.domain_name} is not defined")
        self._start(dom)

    def power_state(self, uuid: str) -> PowerState:
        dom = self._lookup(canonical_uuid(uuid))
        if dom is None or (state := self._call(dom.state, ok=_MISSING)) is None:
            return PowerState.NOSTATE
        return _POWER_STATES.get(state[0], PowerState.NOSTATE)

    def migrate_disk_and_power_off(self, inst: InstanceSpec, dest_instances_dir: Path) -> None:
        inst_dir, resize_dir = self._dir(inst.uuid), self._dir(inst.uuid, _RESIZE)
        # Off before the rename: a running guest would keep writing to the disk we copy.
        self.power_off(inst)
        if inst_dir.exists() and not resize_dir.exists():
            inst_dir.rename(resize_dir)
        src = resize_dir / "disk"
        if not src.exists():
            raise DiskNotFound(location=str(src))
        dest_dir = Path(dest_instances_dir).resolve() / canonical_uuid(inst.uuid)
        dest_dir.mkdir(parents=True, exist_ok=True)
        dest = dest_dir / "disk"
        # A dest disk exists only once fully copied (atomic rename); one at least as
        # new as the stopped source is this copy, redelivered, and copying again
        # would undo finish_migration's grow.
        if not dest.exists() or dest.stat().st_mtime_ns < src.stat().st_mtime_ns:
            _sparse_copy(src, dest)

    def finish_migration(self, inst: InstanceSpec, *, power_on: bool) -> None:
        inst_dir = self._dir(inst.uuid)
        disk = inst_dir / "disk"
        if not disk.exists():
            raise DiskNotFound(location=str(disk))
        if disk.stat().st_size < inst.root_gb * GiB:
            os.truncate(disk, inst.root_gb * GiB)
        dom = self._define(inst, inst_dir)
        if power_on:
            self._start(dom)

    def confirm_migration(self, inst: InstanceSpec, *, same_host: bool) -> None:
        _rmtree_with_retries(self._dir(inst.uuid, _RESIZE))
        if not same_host:
            # On the same host this uuid is the resized domain now in use.
            self._undefine(canonical_uuid(inst.uuid))

    def destroy(self, inst: InstanceSpec, *, destroy_disks: bool) -> None:
        inst_dir = self._dir(inst.uuid)
        self._undefine(canonical_uuid(inst.uuid))
        if destroy_disks and inst_dir.exists():
            shutil.rmtree(inst_dir)

    def purge(self, uuid: str) -> list[str]:
        removed = []
        self._undefine(canonical_uuid(uuid))
        for suffix in ("", _RESIZE):
            path = self._dir(uuid, suffix)
            if path.exists():
                _rmtree_with_retries(path)
                removed.append(path.name)
        return removed

    def finish_revert_migration(self, inst: InstanceSpec, *, power_on: bool) -> None:
        inst_dir, resize_dir = self._dir(inst.uuid), self._dir(inst.uuid, _RESIZE)
        if resize_dir.exists():
            # A same-host domain may still run from the dir we are about to delete.
            self.power_off(inst)
            # Nova's _cleanup_failed_migration: a leftover dest copy blocks the rename.
            if inst_dir.exists():
                shutil.rmtree(inst_dir)
            resize_dir.rename(inst_dir)
        elif not inst_dir.exists():
            raise DiskNotFound(location=str(resize_dir))
        dom = self._define(inst, inst_dir)
        if power_on:
            self._start(dom)

    def recover(self, running: dict[str, bool]) -> list[str]:
        defined: dict[str, None] = {}
        # _resize first, so for a same-host resize the current dir's XML wins.
        for suffix in (_RESIZE, ""):
            for uuid in self._dir_uuids(suffix):
                xml_path = self._dir(uuid, suffix) / "libvirt.xml"
                if xml_path.is_file():
                    xml = xml_path.read_text(encoding="utf-8")
                    self._call(lambda x=xml: self._conn().defineXML(x))
                    defined[uuid] = None
        for uuid in defined:
            dom = self._lookup(uuid) if running.get(uuid) else None
            if dom is not None:
                self._start(dom)
        return list(defined)

    def _dir_uuids(self, suffix: str) -> list[str]:
        if not self.instances_dir.is_dir():
            return []
        found = []
        for entry in sorted(self.instances_dir.iterdir()):
            if entry.is_dir() and entry.name.endswith(suffix):
                with suppress(InvalidUUID):
                    found.append(canonical_uuid(entry.name.removesuffix(suffix)))
        return found

    def list_domains(self) -> list[DomainInfo]:
        result = []
        for dom in self._call(lambda: self._conn().listAllDomains(0)):
            # A domain undefined while we list it is simply skipped.
            info = self._call(lambda d=dom: (d.name(), d.UUIDString(), d.info()), ok=_MISSING)
            if info is None or not info[0].startswith("instance-"):
                continue
            name, uuid, (state, max_kib, _cur, vcpus, _cpu) = info
            power = _POWER_STATES.get(state, PowerState.NOSTATE)
            result.append(DomainInfo(uuid, name, power, int(vcpus), int(max_kib) // 1024))
        return result
