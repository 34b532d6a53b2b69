"""A host whose guests really run: QEMU or KVM, through ``qemu:///system``.

Instances follow Nova's layout (:mod:`resizeflow.virt.disks`), their XML is
Nova's (:mod:`resizeflow.virt.domain_xml`), their NICs are taps on their
network's bridge, joined to the other hosts by VXLAN
(:mod:`resizeflow.virt.vifs`), a guest is shut down cleanly before it is
destroyed, and a start waits until libvirt reports the domain running.
"""

from __future__ import annotations

import logging
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import libvirt

from resizeflow.conf.netnames import check_length
from resizeflow.errors import GuestNotRunning, TransientError
from resizeflow.openstack.base import TunnelPeer
from resizeflow.states import PowerState
from resizeflow.virt import disks, imagecopy, kvm_probe, vifs
from resizeflow.virt.base import InstanceSpec, VolumeConnection
from resizeflow.virt.connection import MISSING, NOT_RUNNING, LibvirtConnection
from resizeflow.virt.domain_xml import HostConfig, domain_xml, volume_serials
from resizeflow.virt.layout import HostLayout
from resizeflow.virt.remotefs.base import RemoteFilesystem, RemoteHost
from resizeflow.virt.strategy import DiskCopy

log = logging.getLogger(__name__)

_RUNNING_POLL = 0.5
_SHUTDOWN_POLL = 0.2
_TAP = re.compile(r"<target dev='(tap[^']*)'")
_BRIDGE = re.compile(r"<source bridge='([^']*)'")
_CONFIG, _LIVE = libvirt.VIR_DOMAIN_AFFECT_CONFIG, libvirt.VIR_DOMAIN_AFFECT_LIVE
# How long a guest may take to let a volume go, and how often it is asked again.
_DETACH_TIMEOUT = 60.0
_DETACH_RETRY = 5.0
_DETACH_POLL = 0.2
# A repeated live detach: the disk is already gone, or QEMU's unplug is still under way.
_DETACH_PENDING = MISSING | {libvirt.VIR_ERR_DEVICE_MISSING, libvirt.VIR_ERR_OPERATION_FAILED}


def _sooner(own: float, deadline: float | None) -> float:
    """A wait's end: its own timeout, or the step's deadline if that comes first."""
    return own if deadline is None else min(own, deadline)


class RealHypervisorHost:
    """A :class:`~resizeflow.virt.strategy.HostStrategy` for QEMU and KVM."""

    real = True
    copied_disks = disks.COPIED

    def __init__(
        self,
        conn: LibvirtConnection,
        layout: HostLayout,
        *,
        virt_type: str | None,
        network: vifs.HostNetworking,
        shutdown_timeout: float = 60.0,
        shutdown_retry_interval: float = 10.0,
        running_timeout: float = 60.0,
        probe_kernels: Sequence[Path] = (),
    ) -> None:
        self.conn = conn
        self.layout = layout
        self._virt_type = virt_type  # None: detected on first use, from the host itself
        self.network = network
        self.shutdown_timeout = shutdown_timeout
        self.shutdown_retry_interval = shutdown_retry_interval
        self.running_timeout = running_timeout
        self.probe_kernels = tuple(probe_kernels)
        self._host_config: HostConfig | None = None

    # -- the host ------------------------------------------------------------
    @property
    def virt_type(self) -> str:
        """The domain type: given, else detected."""
        if self._virt_type is None:
            self._virt_type = self._detect_virt_type()
        return self._virt_type

    def _domain_caps(self, virt_type: str) -> ET.Element | None:
        xml = self.conn.capabilities(virt_type)
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
        log.info("host %s: virt type %s (detected)", self.layout.hostname, chosen)
        return chosen

    def _host(self) -> HostConfig:
        if self._host_config is None:
            caps = self._domain_caps(self.virt_type)
            machine = caps.findtext("machine") if caps is not None else None
            self._host_config = HostConfig(
                virt_type=self.virt_type,
                machine=machine or "pc",
                bridge=self.network.bridge_template,
                host=self.network.host,
                disk_cache="none"
                if disks.supports_direct_io(self.layout.instances_dir)
                else "writethrough",
            )
        return self._host_config

    def check(self) -> None:
        net = self.network
        check_length(net.bridge_template, "the bridge template", net.host)
        check_length(net.vxlan_template, "the VXLAN device template", net.host)

    # -- disks ---------------------------------------------------------------
    def create_disks(self, inst_dir: Path, inst: InstanceSpec) -> None:
        disks.create_disks(self.layout.instances_dir, inst_dir, inst)

    def recreate_disks(self, inst_dir: Path, inst: InstanceSpec) -> None:
        if not (inst_dir / disks.ROOT).exists():
            log.warning("hard reboot of %s: no root disk; creating it from its image", inst.uuid)
        inst_dir.mkdir(parents=True, exist_ok=True)
        disks.create_disks(self.layout.instances_dir, inst_dir, inst)

    def grow_disks(self, inst_dir: Path, inst: InstanceSpec) -> None:
        disks.finish_disks(self.layout.instances_dir, inst_dir, inst)

    def copy_disk(
        self,
        fs: RemoteFilesystem,
        source: Path,
        peer: RemoteHost,
        target: PurePosixPath,
        remote_instances_dir: PurePosixPath,
        timeout: float | None,
    ) -> DiskCopy:
        # The root disk is an overlay on _base: its backing image goes only
        # where the dest's image cache lacks it.
        moved = imagecopy.copy_disk(
            fs,
            source,
            peer,
            target,
            local_cache=self.layout.instances_dir / disks.BASE,
            remote_cache=remote_instances_dir / disks.BASE,
            timeout=timeout,
        )
        return DiskCopy(moved.sent, tuple(p.name for p in moved.backing_copied))

    # -- domains -------------------------------------------------------------
    def domain_xml(
        self,
        inst: InstanceSpec,
        inst_dir: Path,
        name: str,
        domain_uuid: str,
        volumes: Sequence[VolumeConnection],
    ) -> str:
        return domain_xml(inst, inst_dir, self._host(), name, domain_uuid, volumes)

    def attach_disk(self, dom: Any, disk_xml: str, *, config: bool, live: bool) -> None:
        flags = (_CONFIG if config else 0) | (_LIVE if live else 0)
        if flags:
            self.conn.call(dom.attachDeviceFlags, disk_xml, flags)

    def detach_disk(
        self,
        dom: Any,
        disk_xml: str,
        volume_id: str,
        *,
        config: bool,
        live: bool,
        deadline: float | None,
    ) -> None:
        """Nova's order: the definition first, then the guest.

        NOTE: a live detach is a request to the guest (an ACPI unplug), which a
        guest still booting may miss: it is repeated every few seconds until
        the disk leaves the live XML. A guest that keeps it is a transient
        failure; the retry asks again, the definition already done.
        """
        if config:
            self.conn.call(dom.detachDeviceFlags, disk_xml, _CONFIG, ok=MISSING)
        if not live:
            return
        end = _sooner(time.monotonic() + _DETACH_TIMEOUT, deadline)
        while True:
            self.conn.call(dom.detachDeviceFlags, disk_xml, _LIVE, ok=_DETACH_PENDING)
            ask_again = min(time.monotonic() + _DETACH_RETRY, end)
            while time.monotonic() < ask_again:
                if not self._live_holds(dom, volume_id):
                    return
                time.sleep(_DETACH_POLL)
            if time.monotonic() >= end:
                raise TransientError(
                    reason=f"the guest of {dom.name()} did not let volume {volume_id} go"
                )

    def _live_holds(self, dom: Any, volume_id: str) -> bool:
        xml = self.conn.live_xml(dom)
        return xml is not None and volume_id in volume_serials(xml)

    def console_note(self, uuid: str, what: str) -> None:
        pass  # the guest's QEMU writes console.log itself

    def wait_until_running(self, dom: Any, uuid: str, deadline: float | None) -> None:
        """Nova's ``_wait_for_running``, with a deadline.

        NOTE: running means seen running on two polls in a row: a guest that
        pauses (an I/O error on its disk) or stops right after its start has
        not come up. One that never does fails the step for good; the driver
        stops and undefines its domain and removes its taps first, so the
        failure leaks nothing on this host but the disks the instance's delete
        removes.
        """
        deadline = _sooner(time.monotonic() + self.running_timeout, deadline)
        seen, state = 0, PowerState.NOSTATE
        while True:
            state = self.conn.state(dom)
            seen = seen + 1 if state == PowerState.RUNNING else 0
            if seen >= 2:
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(_RUNNING_POLL)
        raise GuestNotRunning(uuid=uuid, timeout=self.running_timeout, state=state.name)

    def _clean_shutdown(self, dom: Any, deadline: float | None = None) -> bool:
        """Nova's ``_clean_shutdown``: ACPI power button, re-pressed every retry interval.

        NOTE: a guest still booting may miss the first press, hence the
        retries; after ``shutdown_timeout`` the caller destroys the domain.
        """
        if not self.conn.is_active(dom):
            return True
        self.conn.call(dom.shutdown, ok=NOT_RUNNING)
        deadline = _sooner(time.monotonic() + self.shutdown_timeout, deadline)
        next_press = time.monotonic() + self.shutdown_retry_interval
        while time.monotonic() < deadline:
            if not self.conn.is_active(dom):
                return True
            if time.monotonic() >= next_press:
                next_press += self.shutdown_retry_interval
                self.conn.call(dom.shutdown, ok=NOT_RUNNING)
            time.sleep(_SHUTDOWN_POLL)
        return not self.conn.is_active(dom)

    def shut_down(self, dom: Any, deadline: float | None) -> bool:
        if self.shutdown_timeout <= 0:
            return False
        if self._clean_shutdown(dom, deadline):
            return True
        log.warning("domain %s ignored the clean shutdown; destroying it", dom.name())
        return False

    def shut_down_for_reboot(self, dom: Any, deadline: float | None) -> bool:
        return not self.conn.is_active(dom) or self._clean_shutdown(dom, deadline)

    # -- NICs ----------------------------------------------------------------
    def plug(self, vnis: Iterable[int], peers: Sequence[TunnelPeer]) -> None:
        """Each network: its bridge, VXLAN device and flood list to the other
        hosts, refreshed each time (hosts join later)."""
        for vni in sorted(set(vnis)):
            self.network.plug_network(vni, peers)

    def networks_of(self, xml: str) -> set[int]:
        found = (self.network.vni_of(b) for b in _BRIDGE.findall(xml))
        return {vni for vni in found if vni is not None}

    def taps(self, dom: Any) -> list[str]:
        xml = self.conn.call(dom.XMLDesc, 0, ok=MISSING)
        if not xml:
            return []
        return _TAP.findall(xml)

    def unplug(self, taps: Iterable[str]) -> None:
        vifs.unplug(self.network.owns_bridge, taps)
