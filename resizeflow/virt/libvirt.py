"""The hypervisor of one compute host, through libvirt-python.

Works against ``test:///...`` (the libvirt test driver) and ``qemu:///system`` by
configuration alone. Each instance lives in ``<instances_dir>/<uuid>`` with the
``libvirt.xml`` it was last defined from.

- On the test driver (the fast tier) the disk is a sparse raw file grown with
  ``truncate`` and the domain XML is minimal.
- On a real hypervisor (virt type ``qemu`` or ``kvm``) the instance follows
  Nova's layout (see :mod:`resizeflow.virt.disks`), its XML is Nova's (see
  :mod:`resizeflow.virt.domain_xml`), its NICs are taps on the host's bridge
  (see :mod:`resizeflow.virt.vifs`), it is shut down cleanly before being
  destroyed, and a start waits until libvirt reports the domain running.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import time
import uuid as uuidlib
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape, quoteattr

import libvirt

from resizeflow.errors import (
    ConfigError,
    DiskNotFound,
    GuestNotRunning,
    InstanceFaultRollback,
    InstanceNotFound,
    InvalidUUID,
    RemoteHostUnreachable,
    TransientError,
    VirtError,
)
from resizeflow.openstack.images import ImageStore
from resizeflow.states import PowerState
from resizeflow.virt import disks, imagecopy, kvm_probe, remotefs, vifs
from resizeflow.virt.base import DomainInfo, InstanceSpec, NodeResources, PeerHost
from resizeflow.virt.domain_xml import HostConfig, domain_xml

if TYPE_CHECKING:
    from resizeflow.conf import Settings

log = logging.getLogger(__name__)

GiB = 1024**3
_RESIZE = "_resize"
# Nova reads at most this much of a guest's console log (MAX_CONSOLE_BYTES).
MAX_CONSOLE_BYTES = 100 * 1024
CONSOLE_LOG = "console.log"
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
# The URI schemes whose virt type is known without asking the host.
_REAL_SCHEMES = frozenset({"qemu"})
# What Nova's fake driver reports, so that scheduling on test:///default is
# never limited by the test driver's pretend 3 GiB host.
FAKE_INVENTORY = {"vcpus": 100000, "memory_mb": 800000000, "local_gb": 600000}
_RUNNING_POLL = 0.5
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
# The test driver's minimal domain; text is escaped and attributes quoted on use.
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


def _sooner(own: float, deadline: float | None) -> float:
    """A wait's end: its own timeout, or the step's deadline if that comes first."""
    return own if deadline is None else min(own, deadline)


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
        self,
        uri: str,
        instances_dir: Path,
        *,
        hostname: str,
        virt_type: str | None = None,
        bridge: str = "",
        shutdown_timeout: float = 60.0,
        shutdown_retry_interval: float = 10.0,
        running_timeout: float = 60.0,
        probe_kernels: Sequence[Path] = (),
        name_template: str = "instance-{uuid}",
        remote: remotefs.RemoteFilesystem | None = None,
        shared_storage: bool | None = None,
    ) -> None:
        self.uri = uri
        self.instances_dir = Path(instances_dir).resolve()
        self.hostname = hostname
        scheme = uri.split(":", 1)[0].split("+", 1)[0]
        if virt_type:
            self._virt_type: str | None = virt_type
        elif scheme == "test":
            self._virt_type = "test"
        elif scheme in _REAL_SCHEMES:
            self._virt_type = None  # detected on first use, from the host itself
        else:
            raise ConfigError(f"cannot infer virt_type from libvirt URI {uri!r}; set it")
        self.bridge = bridge or f"rfbr-{hostname}"[:15]
        self.shutdown_timeout = shutdown_timeout
        self.shutdown_retry_interval = shutdown_retry_interval
        self.running_timeout = running_timeout
        self.probe_kernels = tuple(probe_kernels)
        if "{uuid}" not in name_template:
            raise ConfigError(f"instance name template {name_template!r} lacks {{uuid}}")
        self.name_template = name_template
        # How disks reach other hosts, and RESIZEFLOW_SHARED_STORAGE (None: detect).
        self.remote = remote if remote is not None else remotefs.LocalFilesystem()
        self.shared_storage = shared_storage
        self._lock = threading.Lock()
        self._conn_obj: Any = None
        self._host_config: HostConfig | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> LibvirtDriver:
        """The driver of ``settings.host``, as its worker builds it."""
        # KVM is verified by booting a kernel: the host's own, else one from the image store.
        kernels = [*kvm_probe.host_kernels()]
        kernels += [
            ImageStore(settings.images_dir()).data_path(m.id)
            for m in ImageStore(settings.images_dir()).list()
            if m.disk_format == "aki"
        ]
        return cls(
            settings.libvirt_uri,
            settings.instances_dir(settings.host),
            hostname=settings.host,
            virt_type=settings.virt_type or None,
            # Checked for length only where a bridge is used (real hypervisors).
            bridge=settings.bridge.format(host=settings.host),
            shutdown_timeout=settings.shutdown_timeout,
            shutdown_retry_interval=settings.shutdown_retry_interval,
            running_timeout=settings.running_timeout,
            probe_kernels=kernels,
            name_template=settings.instance_name_template,
            remote=remotefs.remote_filesystem(settings),
            shared_storage=settings.shared_storage,
        )

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
        dom_uuid = self.domain_uuid(uuid)
        return self._call(lambda: self._conn().lookupByUUIDString(dom_uuid), ok=_MISSING)

    # --- names ------------------------------------------------------------------
    def domain_name(self, uuid: str) -> str:
        """Nova's ``instance_name_template``, filled in for this host."""
        return self.name_template.format(uuid=uuid, host=self.hostname)

    def domain_uuid(self, uuid: str) -> str:
        """The libvirt domain's UUID: the instance's, as in Nova.

        NOTE: unless the name template holds ``{host}``: then one libvirtd
        serves several compute hosts (a test machine, the demo), and the
        source and dest domains of one resize must not be the same domain,
        so each host's domain gets a UUID derived from its name.
        """
        if "{host}" not in self.name_template:
            return uuid
        return str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, "libvirt:" + self.domain_name(uuid)))

    def _instance_uuid(self, name: str) -> str | None:
        """The instance a domain of this host belongs to, from its name; None if not ours."""
        candidate = name[-36:]
        try:
            canonical_uuid(candidate)
        except InvalidUUID:
            return None
        return candidate if self.domain_name(candidate) == name else None

    # --- the host -------------------------------------------------------------
    @property
    def virt_type(self) -> str:
        """The domain type: given, ``test`` on the test driver, else detected."""
        if self._virt_type is None:
            self._virt_type = self._detect_virt_type()
        return self._virt_type

    @property
    def real(self) -> bool:
        return self.virt_type != "test"

    def _domain_caps(self, virt_type: str) -> ET.Element | None:
        xml = self._call(
            lambda: self._conn().getDomainCapabilities(None, "x86_64", None, virt_type, 0),
            ok=frozenset({libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_CONFIG_UNSUPPORTED}),
        )
        # libvirtd's own answer, not user input.
        return None if xml is None else ET.fromstring(xml)  # noqa: S314

    def _detect_virt_type(self) -> str:
        # NOTE: libvirt offering kvm is necessary, not sufficient: a nested,
        # paravirtual KVM opens /dev/kvm and then hangs every Linux guest at
        # boot. Only a kernel that really boots under it makes us pick kvm.
        if self._domain_caps("kvm") is not None and kvm_probe.kvm_boots(self.probe_kernels):
            chosen = "kvm"
        else:
            chosen = "qemu"
        log.info("host %s: virt type %s (detected)", self.hostname, chosen)
        return chosen

    def _host(self) -> HostConfig:
        if self._host_config is None:
            caps = self._domain_caps(self.virt_type)
            machine = caps.findtext("machine") if caps is not None else None
            self._host_config = HostConfig(
                virt_type=self.virt_type,
                machine=machine or "pc",
                bridge=self.bridge,
                disk_cache="none"
                if disks.supports_direct_io(self.instances_dir)
                else "writethrough",
            )
        return self._host_config

    # --- paths and domains -----------------------------------------------------
    def _dir(self, uuid: str, suffix: str = "") -> Path:
        path = (self.instances_dir / (canonical_uuid(uuid) + suffix)).resolve()
        if path.parent != self.instances_dir:
            raise InvalidUUID(uuid=uuid)
        return path

    def _xml(self, inst: InstanceSpec, inst_dir: Path) -> str:
        if self.real:
            return domain_xml(
                inst,
                inst_dir,
                self._host(),
                self.domain_name(inst.uuid),
                self.domain_uuid(inst.uuid),
            )
        return _DOMAIN_XML.format(
            type=quoteattr(self.virt_type),
            name=escape(self.domain_name(inst.uuid)),
            uuid=self.domain_uuid(inst.uuid),
            memory=int(inst.memory_mb),
            vcpus=int(inst.vcpus),
            arch="",
            disk=quoteattr(str(inst_dir / "disk")),
        )

    def _define(self, inst: InstanceSpec, inst_dir: Path) -> Any:
        xml = self._xml(inst, inst_dir)
        _write_atomic(inst_dir / "libvirt.xml", xml)
        return self._call(lambda: self._conn().defineXML(xml))

    def _plug(self) -> None:
        if self.real:
            vifs.ensure_bridge(self.bridge)

    def _taps(self, dom: Any) -> list[str]:
        """The tap names in a domain's definition: what to unplug once it is gone."""
        xml = self._call(dom.XMLDesc, 0, ok=_MISSING)
        if not xml:
            return []
        return re.findall(r"<target dev='(tap[^']*)'", xml)

    def _start(self, dom: Any, uuid: str, deadline: float | None = None) -> None:
        # create() on a running domain is an internal error, which would read as transient.
        if not self._call(dom.isActive):
            self._plug()
            self._call(dom.create)
            self._console_line(uuid, "started")
        if self.real:
            self._wait_for_running(dom, uuid, deadline)

    def _console_line(self, uuid: str, what: str) -> None:
        """The test driver's stand-in for a serial console: a real guest's QEMU
        writes ``console.log`` itself; on ``test:///`` the driver notes there
        when this host starts or stops the domain, with the flavor it runs at."""
        if self.real:
            return
        path = self._dir(uuid) / CONSOLE_LOG
        info = self._call(lambda: self._conn().lookupByUUIDString(self.domain_uuid(uuid)).info())
        line = (
            f"{self.domain_name(uuid)} {what} on {self.hostname}: "
            f"{info[3]} vCPU, {info[1] // 1024} MiB\n"
        )
        with suppress(OSError), path.open("a", encoding="utf-8") as log:
            log.write(line)

    def _wait_for_running(self, dom: Any, uuid: str, deadline: float | None = None) -> None:
        """Nova's ``_wait_for_running``, with a deadline.

        NOTE: running means seen running on two polls in a row: a guest that
        pauses (an I/O error on its disk) or stops right after its start has
        not come up. One that never does fails the step for good; its domain
        is stopped and undefined and its taps removed first, so the failure
        leaks nothing on this host but the disks the instance's delete removes.
        """
        deadline = _sooner(time.monotonic() + self.running_timeout, deadline)
        seen, state = 0, PowerState.NOSTATE
        while True:
            raw = self._call(dom.state, ok=_MISSING)
            state = _POWER_STATES.get(raw[0], PowerState.NOSTATE) if raw else PowerState.NOSTATE
            seen = seen + 1 if state == PowerState.RUNNING else 0
            if seen >= 2:
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(_RUNNING_POLL)
        self._undefine(uuid)
        raise GuestNotRunning(uuid=uuid, timeout=self.running_timeout, state=state.name)

    def _clean_shutdown(self, dom: Any, deadline: float | None = None) -> bool:
        """Nova's ``_clean_shutdown``: ACPI power button, re-pressed every retry interval.

        NOTE: a guest still booting may miss the first press, hence the
        retries; after ``shutdown_timeout`` the caller destroys the domain.
        """
        if not self._call(dom.isActive, ok=_MISSING):
            return True
        self._call(dom.shutdown, ok=_MISSING | {libvirt.VIR_ERR_OPERATION_INVALID})
        deadline = _sooner(time.monotonic() + self.shutdown_timeout, deadline)
        next_press = time.monotonic() + self.shutdown_retry_interval
        while time.monotonic() < deadline:
            if not self._call(dom.isActive, ok=_MISSING):
                return True
            if time.monotonic() >= next_press:
                next_press += self.shutdown_retry_interval
                self._call(dom.shutdown, ok=_MISSING | {libvirt.VIR_ERR_OPERATION_INVALID})
            time.sleep(0.2)
        return not self._call(dom.isActive, ok=_MISSING)

    def _stop(self, dom: Any, *, clean: bool = False, deadline: float | None = None) -> None:
        if clean and self.real and self.shutdown_timeout > 0:
            if self._clean_shutdown(dom, deadline):
                return
            log.warning("domain %s ignored the clean shutdown; destroying it", dom.name())
        if self._call(dom.isActive, ok=_MISSING):
            self._call(dom.destroy, ok=_MISSING | {libvirt.VIR_ERR_OPERATION_INVALID})
            uuid = self._instance_uuid(self._call(dom.name))
            if uuid is not None:
                self._console_line(uuid, "stopped")

    def _undefine(self, uuid: str) -> None:
        dom = self._lookup(uuid)
        if dom is None:
            return
        taps = self._taps(dom) if self.real else []
        self._stop(dom)
        flags = libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
        self._call(dom.undefineFlags, flags, ok=_MISSING)
        # Nova's unplug_vifs: libvirt removes a stopped domain's taps, but not
        # after QEMU or libvirtd died under it.
        if taps:
            vifs.unplug(self.bridge, taps)

    # --- VirtDriver ------------------------------------------------------------
    def node_resources(self) -> NodeResources:
        self.instances_dir.mkdir(parents=True, exist_ok=True)
        if self.uri.rstrip("/") == "test:///default":
            return NodeResources(hypervisor_hostname=self.hostname, **FAKE_INVENTORY)
        info = self._call(lambda: self._conn().getInfo())
        # Detect the virt type now, at the worker's start, rather than in its first step.
        log.info("host %s: libvirt %s, virt type %s", self.hostname, self.uri, self.virt_type)
        if self.real and not 0 < len(self.bridge) <= 15:
            raise ConfigError(f"bridge name {self.bridge!r} must be 1 to 15 characters")
        return NodeResources(
            hypervisor_hostname=self.hostname,
            vcpus=int(info[2]),
            memory_mb=int(info[1]),
            local_gb=shutil.disk_usage(self.instances_dir).free // GiB,
        )

    def spawn(self, inst: InstanceSpec, *, power_on: bool, deadline: float | None = None) -> None:
        inst_dir = self._dir(inst.uuid)
        inst_dir.mkdir(parents=True, exist_ok=True)
        if self.real:
            disks.create_disks(self.instances_dir, inst_dir, inst)
        else:
            disk = inst_dir / "disk"
            if not disk.exists():
                disk.touch()
                os.truncate(disk, inst.root_gb * GiB)
        dom = self._define(inst, inst_dir)
        self._plug()
        if power_on:
            self._start(dom, inst.uuid, deadline)

    def power_off(self, inst: InstanceSpec, *, deadline: float | None = None) -> None:
        dom = self._lookup(canonical_uuid(inst.uuid))
        if dom is not None:
            self._stop(dom, clean=True, deadline=deadline)

    def power_on(self, inst: InstanceSpec, *, deadline: float | None = None) -> None:
        dom = self._lookup(canonical_uuid(inst.uuid))
        if dom is None:
            raise VirtError(reason=f"domain {self.domain_name(inst.uuid)} is not defined")
        self._start(dom, inst.uuid, deadline)

    def power_state(self, uuid: str) -> PowerState:
        dom = self._lookup(canonical_uuid(uuid))
        if dom is None or (state := self._call(dom.state, ok=_MISSING)) is None:
            return PowerState.NOSTATE
        return _POWER_STATES.get(state[0], PowerState.NOSTATE)

    def reboot(self, inst: InstanceSpec, *, hard: bool, deadline: float | None = None) -> None:
        """Nova's reboot.

        Soft: the guest is shut down cleanly and started again; one that does
        not go down within the shutdown timeout gets a hard reboot instead, as
        in Nova. Hard: the domain is destroyed and defined again from ``inst``,
        the database's view of the server, then started: the way out of a
        wedged guest, or of a domain a failed operation left undefined.
        """
        uuid = canonical_uuid(inst.uuid)
        if not hard:
            dom = self._lookup(uuid)
            if dom is not None and self._soft_reboot(dom, uuid, deadline):
                return
            log.warning("soft reboot of %s did not complete; rebooting it hard", uuid)
        self._hard_reboot(inst, deadline)

    def _soft_reboot(self, dom: Any, uuid: str, deadline: float | None) -> bool:
        if self.real and self._call(dom.isActive, ok=_MISSING):
            if not self._clean_shutdown(dom, deadline):
                return False
        else:
            self._stop(dom)
        self._start(dom, uuid, deadline)
        return True

    def _hard_reboot(self, inst: InstanceSpec, deadline: float | None) -> None:
        inst_dir, resize_dir = self._dir(inst.uuid), self._dir(inst.uuid, _RESIZE)
        dom = self._lookup(canonical_uuid(inst.uuid))
        if dom is not None:
            self._stop(dom)  # destroyed, its disks kept
        if not inst_dir.exists() and resize_dir.exists():
            # NOTE: the database puts the server on this host, but its disks are
            # still under the name a resize gave them: a revert failed before
            # it renamed them back. They are the server's; take them back.
            log.warning("hard reboot of %s takes its disks back from %s", inst.uuid, resize_dir)
            resize_dir.rename(inst_dir)
        if self.real:
            if not (inst_dir / disks.ROOT).exists():
                log.warning(
                    "hard reboot of %s: no root disk; creating it from its image", inst.uuid
                )
            inst_dir.mkdir(parents=True, exist_ok=True)
            disks.create_disks(self.instances_dir, inst_dir, inst)
        elif not (inst_dir / "disk").exists():
            raise DiskNotFound(location=str(inst_dir / "disk"))
        dom = self._define(inst, inst_dir)
        self._plug()
        self._start(dom, inst.uuid, deadline)

    def domain_whole(self, uuid: str) -> bool:
        """Whether the domain is defined here and its root disk is in its dir.

        NOTE: ``destroy`` undefines the domain before it removes anything, so
        a domain still defined proves that no destroy has begun.
        """
        if self._lookup(canonical_uuid(uuid)) is None:
            return False
        return (self._dir(uuid) / (disks.ROOT if self.real else "disk")).is_file()

    def console_output(self, uuid: str) -> bytes:
        """The end of the guest's console log on this host, at most ``MAX_CONSOLE_BYTES``.

        As Nova reads it: the log and the files it was rotated into (``.0``,
        ``.1``...), newest text last; nothing yet written is an empty log.
        """
        if self._lookup(canonical_uuid(uuid)) is None:
            raise InstanceNotFound(instance_id=uuid)
        base = self._dir(uuid) / CONSOLE_LOG
        output, wanted, path, n = b"", MAX_CONSOLE_BYTES, base, 0
        while wanted > 0 and path.exists():
            with path.open("rb") as log_file:
                size = log_file.seek(0, os.SEEK_END)
                log_file.seek(max(0, size - wanted))
                chunk = log_file.read(wanted)
            output = chunk + output
            wanted -= len(chunk)
            path, n = base.with_name(f"{CONSOLE_LOG}.{n}"), n + 1
        return output

    def migrate_disk_and_power_off(
        self, inst: InstanceSpec, dest: PeerHost, *, deadline: float | None = None
    ) -> None:
        """Nova's order: look at the storage, power off, rename the dir, copy the disks.

        The source keeps ``<uuid>_resize`` whatever happens here: it is what a
        revert or a retried resize starts from. A dest disk exists only once
        completely copied (it takes its name last), so a redelivered step
        skips the disks already there and rsync resumes a partial one.
        """
        peer = remotefs.RemoteHost(dest.name, dest.address)
        dest_dir = PurePosixPath(dest.instances_dir) / canonical_uuid(inst.uuid)
        # Asked before the guest goes down, so an unreachable dest fails the
        # step (transiently) while the guest still runs; a failure here has not
        # touched the guest, and the resize is rolled back rather than the
        # server errored (Nova's InstanceFaultRollback).
        try:
            shared = remotefs.storage_is_shared(
                self.shared_storage,
                self.hostname,
                self.remote,
                peer,
                self.instances_dir,
                PurePosixPath(dest.instances_dir),
            )
        except Exception as exc:
            raise InstanceFaultRollback(exc) from exc
        inst_dir, resize_dir = self._dir(inst.uuid), self._dir(inst.uuid, _RESIZE)
        # Off before the rename: a running guest would keep writing to the disk we copy.
        self.power_off(inst, deadline=deadline)
        if inst_dir.exists() and not resize_dir.exists():
            inst_dir.rename(resize_dir)
        if not (resize_dir / "disk").exists():
            raise DiskNotFound(location=str(resize_dir / "disk"))
        # NOTE: on shared storage the copy stays in this filesystem, as Nova's
        # copy_image(host=None) does: the old disks stay intact in _resize.
        fs = remotefs.LocalFilesystem() if shared else self.remote
        try:
            for name in disks.COPIED if self.real else ("disk",):
                source = resize_dir / name
                if source.exists() and not fs.exists(peer, dest_dir / name):
                    self._copy_disk(fs, source, peer, dest, dest_dir / name, deadline)
        except (TransientError, RemoteHostUnreachable):
            raise  # the retry continues the partial copy
        except Exception:
            # Nova's _cleanup_remote_migration, but the source keeps _resize.
            with suppress(Exception):
                fs.remove(peer, dest_dir)
            raise

    def _copy_disk(
        self,
        fs: remotefs.RemoteFilesystem,
        source: Path,
        peer: remotefs.RemoteHost,
        dest: PeerHost,
        target: PurePosixPath,
        deadline: float | None,
    ) -> int:
        """Copy one disk to ``target`` on the peer; the bytes that crossed."""
        started = time.monotonic()
        timeout = None if deadline is None else max(deadline - started, 0.001)
        backing: list[str] = []
        if self.real:
            # The root disk is an overlay on _base: its backing image goes only
            # where the dest's image cache lacks it.
            moved = imagecopy.copy_disk(
                fs,
                source,
                peer,
                target,
                local_cache=self.instances_dir / disks.BASE,
                remote_cache=PurePosixPath(dest.instances_dir) / disks.BASE,
                timeout=timeout,
            )
            sent = moved.sent
            backing = [p.name for p in moved.backing_copied]
        else:
            sent = fs.copy_file(source, peer, target, timeout=timeout).sent
        log.info(
            "copied %s to %s: %d bytes sent in %.2fs%s",
            source.name,
            dest.name,
            sent,
            time.monotonic() - started,
            f", with backing images {backing}" if backing else "",
        )
        return sent

    def finish_migration(
        self, inst: InstanceSpec, *, power_on: bool, deadline: float | None = None
    ) -> None:
        inst_dir = self._dir(inst.uuid)
        disk = inst_dir / "disk"
        if not disk.exists():
            raise DiskNotFound(location=str(disk))
        if self.real:
            disks.finish_disks(self.instances_dir, inst_dir, inst)
        elif disk.stat().st_size < inst.root_gb * GiB:
            os.truncate(disk, inst.root_gb * GiB)
        dom = self._define(inst, inst_dir)
        self._plug()
        if power_on:
            self._start(dom, inst.uuid, deadline)

    def confirm_migration(self, inst: InstanceSpec, *, same_host: bool) -> None:
        _rmtree_with_retries(self._dir(inst.uuid, _RESIZE))
        if not same_host:
            # On the same host this uuid is the resized domain now in use.
            self._undefine(canonical_uuid(inst.uuid))
            if self.real:
                vifs.unplug(self.bridge, [v.tap for v in inst.vifs])

    def destroy(self, inst: InstanceSpec, *, destroy_disks: bool) -> None:
        inst_dir = self._dir(inst.uuid)
        self._undefine(canonical_uuid(inst.uuid))
        if self.real:
            vifs.unplug(self.bridge, [v.tap for v in inst.vifs])
        if destroy_disks and inst_dir.exists():
            shutil.rmtree(inst_dir)

    def shares_resize_source(self, uuid: str) -> bool:
        """RESIZEFLOW_SHARED_STORAGE when set; else whether ``<uuid>_resize`` shows here.

        NOTE: a revert's dest keeps its disks only when the source's instances
        path is this one, as Nova's revert asks the source. The source's
        ``_resize`` dir showing in this host's own path says exactly that,
        without a round trip to the source.
        """
        if self.shared_storage is not None:
            return self.shared_storage
        return self._dir(uuid, _RESIZE).is_dir()

    def purge(self, uuid: str) -> list[str]:
        removed = []
        self._undefine(canonical_uuid(uuid))
        for suffix in ("", _RESIZE):
            path = self._dir(uuid, suffix)
            if path.exists():
                _rmtree_with_retries(path)
                removed.append(path.name)
        return removed

    def finish_revert_migration(
        self, inst: InstanceSpec, *, power_on: bool, deadline: float | None = None
    ) -> None:
        inst_dir, resize_dir = self._dir(inst.uuid), self._dir(inst.uuid, _RESIZE)
        if resize_dir.exists():
            # A same-host domain may still run from the dir we are about to delete.
            dom = self._lookup(canonical_uuid(inst.uuid))
            if dom is not None:
                self._stop(dom)
            # Nova's _cleanup_failed_migration: a leftover dest copy blocks the rename.
            if inst_dir.exists():
                shutil.rmtree(inst_dir)
            resize_dir.rename(inst_dir)
        elif not inst_dir.exists():
            raise DiskNotFound(location=str(resize_dir))
        dom = self._define(inst, inst_dir)
        self._plug()
        if power_on:
            self._start(dom, inst.uuid, deadline)

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
        if defined:
            self._plug()
        for uuid in defined:
            dom = self._lookup(uuid) if running.get(uuid) else None
            # NOTE: no wait for running here: a worker must not hold up its
            # start for every guest, and a guest that fails shows in its state.
            if dom is not None and not self._call(dom.isActive):
                self._call(dom.create)
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
            info = self._call(lambda d=dom: (d.name(), d.info()), ok=_MISSING)
            uuid = self._instance_uuid(info[0]) if info is not None else None
            if info is None or uuid is None:
                continue
            name, (state, max_kib, _cur, vcpus, _cpu) = info
            power = _POWER_STATES.get(state, PowerState.NOSTATE)
            result.append(DomainInfo(uuid, name, power, int(vcpus), int(max_kib) // 1024))
        return result
