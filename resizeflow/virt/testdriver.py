"""A host on libvirt's test driver (``test:///``): guests that are only definitions.

The fast tier, the demo and every stack on one machine run here. Nothing
boots, so a guest is what a test can look at: a sparse raw file as its disk,
grown with ``truncate``; a minimal domain XML, with the NBD disks of its
volumes (attached and detached by redefining it: the test driver has no
hotplug); no NICs; and a line in its ``console.log`` each time this host
starts or stops it, with the flavor it runs at, in place of a serial console.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from pathlib import Path, PurePosixPath
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from resizeflow.errors import DiskNotFound
from resizeflow.openstack.base import TunnelPeer
from resizeflow.virt.base import InstanceSpec, VolumeConnection
from resizeflow.virt.connection import XML_INACTIVE, LibvirtConnection
from resizeflow.virt.domain_xml import volume_disks
from resizeflow.virt.layout import CONSOLE_LOG, ROOT_DISK, HostLayout
from resizeflow.virt.remotefs.base import RemoteFilesystem, RemoteHost
from resizeflow.virt.strategy import DiskCopy

GiB = 1024**3
# The test driver's minimal domain; text is escaped and attributes quoted on use.
_DOMAIN_XML = """<domain type={type}>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <memory unit='MiB'>{memory}</memory>
  <vcpu>{vcpus}</vcpu>
  <os><type>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file={disk}/>
      <target dev='vda' bus='virtio'/>
    </disk>{volumes}
  </devices>
</domain>
"""


class TestDriverHost:
    """A :class:`~resizeflow.virt.strategy.HostStrategy` for ``test:///`` URIs."""

    # Not a test case, whatever pytest's collector thinks of the name.
    __test__ = False

    real = False
    virt_type = "test"
    copied_disks = (ROOT_DISK,)

    def __init__(self, conn: LibvirtConnection, layout: HostLayout) -> None:
        self.conn = conn
        self.layout = layout

    def check(self) -> None:
        pass

    # -- disks ---------------------------------------------------------------
    def create_disks(self, inst_dir: Path, inst: InstanceSpec) -> None:
        disk = inst_dir / ROOT_DISK
        if not disk.exists():
            disk.touch()
            os.truncate(disk, inst.root_gb * GiB)

    def recreate_disks(self, inst_dir: Path, inst: InstanceSpec) -> None:
        # A raw file holds the guest's only data: a missing one cannot be made up.
        if not (inst_dir / ROOT_DISK).exists():
            raise DiskNotFound(location=str(inst_dir / ROOT_DISK))

    def grow_disks(self, inst_dir: Path, inst: InstanceSpec) -> None:
        disk = inst_dir / ROOT_DISK
        if disk.stat().st_size < inst.root_gb * GiB:
            os.truncate(disk, inst.root_gb * GiB)

    def copy_disk(
        self,
        fs: RemoteFilesystem,
        source: Path,
        peer: RemoteHost,
        target: PurePosixPath,
        remote_instances_dir: PurePosixPath,
        timeout: float | None,
    ) -> DiskCopy:
        return DiskCopy(fs.copy_file(source, peer, target, timeout=timeout).sent)

    # -- domains -------------------------------------------------------------
    def domain_xml(
        self,
        inst: InstanceSpec,
        inst_dir: Path,
        name: str,
        domain_uuid: str,
        volumes: Sequence[VolumeConnection],
    ) -> str:
        return _DOMAIN_XML.format(
            type=quoteattr(self.virt_type),
            name=escape(name),
            uuid=domain_uuid,
            memory=int(inst.memory_mb),
            vcpus=int(inst.vcpus),
            disk=quoteattr(str(inst_dir / ROOT_DISK)),
            volumes="".join(
                f"\n    {ET.tostring(disk, encoding='unicode')}"
                for disk in volume_disks(["vda"], volumes)
            ),
        )

    # NOTE: the test driver has no device hotplug; a change to the definition
    # is a redefinition, and a test domain's live devices stay as it started.
    def attach_disk(self, dom: Any, disk_xml: str, *, config: bool, live: bool) -> None:
        if config:
            self._redefine(dom, lambda devices: devices.append(ET.fromstring(disk_xml)))  # noqa: S314

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
        def drop(devices: ET.Element) -> None:
            for disk in devices.findall("disk"):
                if disk.findtext("serial") == volume_id:
                    devices.remove(disk)

        if config:
            self._redefine(dom, drop)

    def _redefine(self, dom: Any, change: Callable[[ET.Element], None]) -> None:
        # Our own definition, as libvirtd returns it.
        root = ET.fromstring(self.conn.call(dom.XMLDesc, XML_INACTIVE))  # noqa: S314
        devices = root.find("devices")
        if devices is None:
            devices = ET.SubElement(root, "devices")
        change(devices)
        self.conn.define(ET.tostring(root, encoding="unicode"))

    def console_note(self, uuid: str, what: str) -> None:
        """The test driver's stand-in for a serial console: a real guest's QEMU
        writes ``console.log`` itself; here the driver notes there when this
        host starts or stops the domain, with the flavor it runs at."""
        layout = self.layout
        path = layout.dir(uuid) / CONSOLE_LOG
        info = self.conn.call(
            lambda: self.conn.conn().lookupByUUIDString(layout.domain_uuid(uuid)).info()
        )
        line = (
            f"{layout.domain_name(uuid)} {what} on {layout.hostname}: "
            f"{info[3]} vCPU, {info[1] // 1024} MiB\n"
        )
        with suppress(OSError), path.open("a", encoding="utf-8") as log:
            log.write(line)

    def wait_until_running(self, dom: Any, uuid: str, deadline: float | None) -> None:
        pass  # a test domain runs as soon as it is created

    def shut_down(self, dom: Any, deadline: float | None) -> bool:
        return False  # no guest to ask: the domain is destroyed

    def shut_down_for_reboot(self, dom: Any, deadline: float | None) -> bool:
        return True  # the caller's destroy is the shutdown

    # -- NICs ----------------------------------------------------------------
    def plug(self, vnis: Iterable[int], peers: Sequence[TunnelPeer]) -> None:
        pass  # no NICs: no bridge, no tunnel

    def networks_of(self, xml: str) -> set[int]:
        return set()

    def taps(self, dom: Any) -> list[str]:
        return []

    def unplug(self, taps: Iterable[str]) -> None:
        pass
