"""The hypervisor of one compute host, through libvirt-python.

Works against ``test:///...`` (the libvirt test driver) and ``qemu:///system`` by
configuration alone. Each instance lives in ``<instances_dir>/<uuid>`` with the
``libvirt.xml`` it was last defined from (:mod:`resizeflow.virt.layout`).

The driver does the same on every host; what a guest is made of (its disks,
its domain XML, its NICs, how it stops and starts) comes from the host
strategy it picks at construction, from the virt type
(:mod:`resizeflow.virt.strategy`): libvirt's test driver
(:class:`~resizeflow.virt.testdriver.TestDriverHost`) or a real QEMU or KVM
hypervisor (:class:`~resizeflow.virt.realhost.RealHypervisorHost`).

Volumes (NBD exports, :class:`~resizeflow.virt.base.VolumeConnection`) come
with each call that defines a domain, as this host reaches them;
:mod:`resizeflow.virt.volumes` attaches and detaches them.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import libvirt

from resizeflow.errors import (
    DiskNotFound,
    GuestNotRunning,
    InstanceFaultRollback,
    InstanceNotFound,
    VirtError,
)
from resizeflow.openstack.base import TunnelPeer
from resizeflow.openstack.images import ImageStore
from resizeflow.states import PowerState
from resizeflow.virt import kvm_probe, volumes
from resizeflow.virt.base import (
    DomainInfo,
    InstanceSpec,
    NodeResources,
    PeerHost,
    VolumeConnection,
)
from resizeflow.virt.connection import (
    MISSING,
    NOT_RUNNING,
    LibvirtConnection,
    canonical_uuid,
)
from resizeflow.virt.layout import (
    CONSOLE_LOG,
    DOMAIN_XML_FILE,
    RESIZE_SUFFIX,
    ROOT_DISK,
    HostLayout,
    read_tail,
    rmtree_with_retries,
    write_atomic,
)
from resizeflow.virt.realhost import RealHypervisorHost
from resizeflow.virt.remotefs import remote_filesystem
from resizeflow.virt.remotefs.base import RemoteFilesystem, RemoteHost
from resizeflow.virt.remotefs.local import LocalFilesystem
from resizeflow.virt.remotefs.shared import storage_is_shared
from resizeflow.virt.resizecopy import copy_disks
from resizeflow.virt.strategy import HostStrategy, is_test_driver
from resizeflow.virt.testdriver import TestDriverHost
from resizeflow.virt.vifs import HostNetworking

if TYPE_CHECKING:
    from resizeflow.conf import Settings

log = logging.getLogger(__name__)

GiB = 1024**3
# Nova reads at most this much of a guest's console log (MAX_CONSOLE_BYTES).
MAX_CONSOLE_BYTES = 100 * 1024

# What Nova's fake driver reports, so that scheduling on test:///default is
# never limited by the test driver's pretend 3 GiB host.
FAKE_INVENTORY = {"vcpus": 100000, "memory_mb": 800000000, "local_gb": 600000}


class LibvirtDriver:
    def __init__(
        self,
        uri: str,
        instances_dir: Path,
        *,
        hostname: str,
        virt_type: str | None = None,
        network: HostNetworking | None = None,
        shutdown_timeout: float = 60.0,
        shutdown_retry_interval: float = 10.0,
        running_timeout: float = 60.0,
        probe_kernels: Sequence[Path] = (),
        name_template: str = "instance-{uuid}",
        remote: RemoteFilesystem | None = None,
        shared_storage: bool | None = None,
    ) -> None:
        self.uri = uri
        self.conn = LibvirtConnection(uri)
        self.layout = HostLayout(Path(instances_dir).resolve(), hostname, name_template)
        # What a guest is made of here, chosen once; the driver never asks which.
        self.host: HostStrategy
        if is_test_driver(uri, virt_type):
            self.host = TestDriverHost(self.conn, self.layout)
        else:
            self.host = RealHypervisorHost(
                self.conn,
                self.layout,
                virt_type=virt_type or None,
                network=network or HostNetworking(host=hostname),
                shutdown_timeout=shutdown_timeout,
                shutdown_retry_interval=shutdown_retry_interval,
                running_timeout=running_timeout,
                probe_kernels=probe_kernels,
            )
        # How disks reach other hosts, and RESIZEFLOW_SHARED_STORAGE (None: detect).
        self.remote = remote if remote is not None else LocalFilesystem()
        self.shared_storage = shared_storage

    @classmethod
    def from_settings(cls, settings: Settings) -> LibvirtDriver:
        """The driver of ``settings.host``, as its worker builds it."""
        # KVM is verified by booting a kernel: the host's own, else one from the image store.
        images = ImageStore(settings.images_dir())
        kernels = [*kvm_probe.host_kernels()]
        kernels += [
            images.data_path(m.id)
            for m in images.list()
            if m.disk_format == "aki" and m.status == "active"  # a queued one has no data
        ]
        return cls(
            settings.libvirt_uri,
            settings.instances_dir(settings.host),
            hostname=settings.host,
            virt_type=settings.virt_type or None,
            # Only a real hypervisor plugs networks.
            network=HostNetworking.of(
                settings, settings.host, plugs=not settings.simulated_hypervisor
            ),
            shutdown_timeout=settings.shutdown_timeout,
            shutdown_retry_interval=settings.shutdown_retry_interval,
            running_timeout=settings.running_timeout,
            probe_kernels=kernels,
            name_template=settings.instance_name_template,
            remote=remote_filesystem(settings),
            shared_storage=settings.shared_storage,
        )

    # --- the host -------------------------------------------------------------
    @property
    def hostname(self) -> str:
        return self.layout.hostname

    @property
    def instances_dir(self) -> Path:
        return self.layout.instances_dir

    @property
    def virt_type(self) -> str:
        """The domain type: given, ``test`` on the test driver, else detected."""
        return self.host.virt_type

    @property
    def real(self) -> bool:
        """Whether guests really run on this host (QEMU or KVM)."""
        return self.host.real

    def domain_name(self, uuid: str) -> str:
        """Nova's ``instance_name_template``, filled in for this host."""
        return self.layout.domain_name(uuid)

    # --- domains ----------------------------------------------------------------
    def _lookup(self, uuid: str) -> Any:
        """The instance's domain here; None if not defined; InvalidUUID for a malformed uuid."""
        return self.conn.lookup(self.layout.domain_uuid(canonical_uuid(uuid)))

    def _defined(self, uuid: str) -> Any:
        dom = self._lookup(uuid)
        if dom is None:
            raise InstanceNotFound(instance_id=uuid)
        return dom

    def _dir(self, uuid: str, suffix: str = "") -> Path:
        return self.layout.dir(uuid, suffix)

    def _xml_file(self, uuid: str) -> Path:
        return self.layout.dir(uuid) / DOMAIN_XML_FILE

    def _define_and_start(
        self,
        inst: InstanceSpec,
        inst_dir: Path,
        vols: Sequence[VolumeConnection],
        power_on: bool,
        deadline: float | None,
    ) -> None:
        """Define the domain from ``inst`` with the volumes as this host reaches them."""
        layout = self.layout
        name, domain_uuid = layout.domain_name(inst.uuid), layout.domain_uuid(inst.uuid)
        xml = self.host.domain_xml(inst, inst_dir, name, domain_uuid, vols)
        write_atomic(inst_dir / DOMAIN_XML_FILE, xml)
        dom = self.conn.define(xml)
        self._plug(inst)
        if power_on:
            self._start(dom, inst, deadline)

    def _plug(self, inst: InstanceSpec) -> None:
        self.host.plug((v.vni for v in inst.vifs), inst.tunnel_peers)

    def _start(self, dom: Any, inst: InstanceSpec, deadline: float | None = None) -> None:
        uuid = inst.uuid
        # create() on a running domain is an internal error, which would read as transient.
        if not self.conn.call(dom.isActive):
            self._plug(inst)
            self.conn.call(dom.create)
            self.host.console_note(uuid, "started")
        try:
            self.host.wait_until_running(dom, uuid, deadline)
        except GuestNotRunning:
            # Stopped and undefined, its taps removed: the failure leaks nothing here.
            self._undefine(uuid)
            raise

    def _stop(self, dom: Any, *, clean: bool = False, deadline: float | None = None) -> None:
        if clean and self.host.shut_down(dom, deadline):
            return
        if self.conn.is_active(dom):
            self.conn.call(dom.destroy, ok=NOT_RUNNING)
            uuid = self.layout.instance_uuid(self.conn.call(dom.name))
            if uuid is not None:
                self.host.console_note(uuid, "stopped")

    def _undefine(self, uuid: str) -> None:
        dom = self._lookup(uuid)
        if dom is None:
            return
        taps = self.host.taps(dom)
        self._stop(dom)
        flags = libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
        self.conn.call(dom.undefineFlags, flags, ok=MISSING)
        # Nova's unplug_vifs: libvirt removes a stopped domain's taps, but not
        # after QEMU or libvirtd died under it.
        if taps:
            self.host.unplug(taps)

    # --- VirtDriver ------------------------------------------------------------
    def node_resources(self) -> NodeResources:
        self.instances_dir.mkdir(parents=True, exist_ok=True)
        if self.uri.rstrip("/") == "test:///default":
            return NodeResources(hypervisor_hostname=self.hostname, **FAKE_INVENTORY)
        info = self.conn.call(lambda: self.conn.conn().getInfo())
        # Detect the virt type now, at the worker's start, rather than in its first step.
        log.info("host %s: libvirt %s, virt type %s", self.hostname, self.uri, self.virt_type)
        self.host.check()
        return NodeResources(
            hypervisor_hostname=self.hostname,
            vcpus=int(info[2]),
            memory_mb=int(info[1]),
            local_gb=shutil.disk_usage(self.instances_dir).free // GiB,
        )

    def spawn(
        self,
        inst: InstanceSpec,
        *,
        power_on: bool,
        deadline: float | None = None,
        volumes: Sequence[VolumeConnection] = (),
    ) -> None:
        inst_dir = self._dir(inst.uuid)
        inst_dir.mkdir(parents=True, exist_ok=True)
        self.host.create_disks(inst_dir, inst)
        self._define_and_start(inst, inst_dir, volumes, power_on, deadline)

    def power_off(self, inst: InstanceSpec, *, deadline: float | None = None) -> None:
        dom = self._lookup(inst.uuid)
        if dom is not None:
            self._stop(dom, clean=True, deadline=deadline)

    def power_on(self, inst: InstanceSpec, *, deadline: float | None = None) -> None:
        dom = self._lookup(inst.uuid)
        if dom is None:
            raise VirtError(reason=f"domain {self.domain_name(inst.uuid)} is not defined")
        self._start(dom, inst, deadline)

    def power_state(self, uuid: str) -> PowerState:
        dom = self._lookup(uuid)
        return PowerState.NOSTATE if dom is None else self.conn.state(dom)

    def reboot(
        self,
        inst: InstanceSpec,
        *,
        hard: bool,
        deadline: float | None = None,
        volumes: Sequence[VolumeConnection] = (),
    ) -> None:
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
            if dom is not None and self._soft_reboot(dom, inst, deadline):
                return
            log.warning("soft reboot of %s did not complete; rebooting it hard", uuid)
        self._hard_reboot(inst, deadline, volumes)

    def _soft_reboot(self, dom: Any, inst: InstanceSpec, deadline: float | None) -> bool:
        if not self.host.shut_down_for_reboot(dom, deadline):
            return False
        self._stop(dom)
        self._start(dom, inst, deadline)
        return True

    def _hard_reboot(
        self, inst: InstanceSpec, deadline: float | None, vols: Sequence[VolumeConnection]
    ) -> None:
        inst_dir, resize_dir = self._dir(inst.uuid), self._dir(inst.uuid, RESIZE_SUFFIX)
        dom = self._lookup(inst.uuid)
        if dom is not None:
            self._stop(dom)  # destroyed, its disks kept
        if not inst_dir.exists() and resize_dir.exists():
            # NOTE: the database puts the server on this host, but its disks are
            # still under the name a resize gave them: a revert failed before
            # it renamed them back. They are the server's; take them back.
            log.warning("hard reboot of %s takes its disks back from %s", inst.uuid, resize_dir)
            resize_dir.rename(inst_dir)
        self.host.recreate_disks(inst_dir, inst)
        self._define_and_start(inst, inst_dir, vols, True, deadline)

    def domain_whole(self, uuid: str) -> bool:
        """Whether the domain is defined here and its root disk is in its dir.

        NOTE: ``destroy`` undefines the domain before it removes anything, so
        a domain still defined proves that no destroy has begun.
        """
        if self._lookup(uuid) is None:
            return False
        return (self._dir(uuid) / ROOT_DISK).is_file()

    def console_output(self, uuid: str) -> bytes:
        """The end of the guest's console log on this host, at most ``MAX_CONSOLE_BYTES``.

        As Nova reads it: the log and the files it was rotated into (``.0``,
        ``.1``...), newest text last; nothing yet written is an empty log.
        """
        self._defined(uuid)
        return read_tail(self._dir(uuid) / CONSOLE_LOG, MAX_CONSOLE_BYTES)

    def migrate_disk_and_power_off(
        self, inst: InstanceSpec, dest: PeerHost, *, deadline: float | None = None
    ) -> None:
        """Nova's order: look at the storage, power off, rename the dir, copy the disks.

        The source keeps ``<uuid>_resize`` whatever happens here: it is what a
        revert or a retried resize starts from. A dest disk exists only once
        completely copied (it takes its name last), so a redelivered step
        skips the disks already there and rsync resumes a partial one.
        """
        peer = RemoteHost(dest.name, dest.address)
        dest_dir = PurePosixPath(dest.instances_dir) / canonical_uuid(inst.uuid)
        # Asked before the guest goes down, so an unreachable dest fails the
        # step (transiently) while the guest still runs; a failure here has not
        # touched the guest, and the resize is rolled back rather than the
        # server errored (Nova's InstanceFaultRollback).
        try:
            shared = storage_is_shared(
                self.shared_storage,
                self.hostname,
                self.remote,
                peer,
                self.instances_dir,
                PurePosixPath(dest.instances_dir),
            )
        except Exception as exc:
            raise InstanceFaultRollback(exc) from exc
        inst_dir, resize_dir = self._dir(inst.uuid), self._dir(inst.uuid, RESIZE_SUFFIX)
        # Off before the rename: a running guest would keep writing to the disk we copy.
        self.power_off(inst, deadline=deadline)
        if inst_dir.exists() and not resize_dir.exists():
            inst_dir.rename(resize_dir)
        if not (resize_dir / "disk").exists():
            raise DiskNotFound(location=str(resize_dir / "disk"))
        # NOTE: on shared storage the copy stays in this filesystem, as Nova's
        # copy_image(host=None) does: the old disks stay intact in _resize.
        fs = LocalFilesystem() if shared else self.remote
        copy_disks(self.host, fs, resize_dir, peer, dest_dir, deadline)

    def finish_migration(
        self,
        inst: InstanceSpec,
        *,
        power_on: bool,
        deadline: float | None = None,
        volumes: Sequence[VolumeConnection] = (),
    ) -> None:
        inst_dir = self._dir(inst.uuid)
        disk = inst_dir / ROOT_DISK
        if not disk.exists():
            raise DiskNotFound(location=str(disk))
        self.host.grow_disks(inst_dir, inst)
        self._define_and_start(inst, inst_dir, volumes, power_on, deadline)

    def confirm_migration(self, inst: InstanceSpec, *, same_host: bool) -> None:
        rmtree_with_retries(self._dir(inst.uuid, RESIZE_SUFFIX))
        if not same_host:
            # On the same host this uuid is the resized domain now in use.
            self._undefine(inst.uuid)
            self.host.unplug(v.tap for v in inst.vifs)

    def destroy(self, inst: InstanceSpec, *, destroy_disks: bool) -> None:
        inst_dir = self._dir(inst.uuid)
        self._undefine(inst.uuid)
        self.host.unplug(v.tap for v in inst.vifs)
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
        return self._dir(uuid, RESIZE_SUFFIX).is_dir()

    def purge(self, uuid: str) -> list[str]:
        removed = []
        self._undefine(uuid)
        for suffix in ("", RESIZE_SUFFIX):
            path = self._dir(uuid, suffix)
            if path.exists():
                rmtree_with_retries(path)
                removed.append(path.name)
        return removed

    def finish_revert_migration(
        self,
        inst: InstanceSpec,
        *,
        power_on: bool,
        deadline: float | None = None,
        volumes: Sequence[VolumeConnection] = (),
    ) -> None:
        inst_dir, resize_dir = self._dir(inst.uuid), self._dir(inst.uuid, RESIZE_SUFFIX)
        if resize_dir.exists():
            # A same-host domain may still run from the dir we are about to delete.
            dom = self._lookup(inst.uuid)
            if dom is not None:
                self._stop(dom)
            # Nova's _cleanup_failed_migration: a leftover dest copy blocks the rename.
            if inst_dir.exists():
                shutil.rmtree(inst_dir)
            resize_dir.rename(inst_dir)
        elif not inst_dir.exists():
            raise DiskNotFound(location=str(resize_dir))
        self._define_and_start(inst, inst_dir, volumes, power_on, deadline)

    def recover(self, running: dict[str, bool], peers: Sequence[TunnelPeer] = ()) -> list[str]:
        defined: dict[str, None] = {}
        networks: set[int] = set()
        # _resize first, so for a same-host resize the current dir's XML wins.
        for suffix in (RESIZE_SUFFIX, ""):
            for uuid in self.layout.dir_uuids(suffix):
                xml_path = self._dir(uuid, suffix) / DOMAIN_XML_FILE
                if xml_path.is_file():
                    xml = xml_path.read_text(encoding="utf-8")
                    self.conn.define(xml)
                    networks |= self.host.networks_of(xml)
                    defined[uuid] = None
        # A rebooted host has none of its networks' bridges: the XML names them.
        self.host.plug(networks, peers)
        for uuid in defined:
            dom = self._lookup(uuid) if running.get(uuid) else None
            # NOTE: no wait for running here: a worker must not hold up its
            # start for every guest, and a guest that fails shows in its state.
            if dom is not None and not self.conn.call(dom.isActive):
                self.conn.call(dom.create)
        return list(defined)

    # --- volumes (resizeflow.virt.volumes) --------------------------------------------
    def attach_volume(self, uuid: str, volume: VolumeConnection) -> str:
        return volumes.attach(
            self.conn, self.host, self._defined(uuid), volume, self._xml_file(uuid)
        )

    def detach_volume(self, uuid: str, volume_id: str, *, deadline: float | None = None) -> None:
        dom = self._lookup(uuid)
        if dom is not None:  # no domain here holds nothing: there is nothing to detach
            volumes.detach(self.conn, self.host, dom, volume_id, self._xml_file(uuid), deadline)

    def attached_volumes(self, uuid: str) -> dict[str, str]:
        return volumes.attached(self.conn, self._defined(uuid))

    def list_domains(self) -> list[DomainInfo]:
        return self.conn.domains(self.layout.instance_uuid)
