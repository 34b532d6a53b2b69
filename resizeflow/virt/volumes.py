"""Volumes attached to and detached from a defined domain, running or stopped.

The driver asks here what a domain holds and what to change; how the change
is made is the host strategy's (:mod:`resizeflow.virt.strategy`): libvirt's
``attachDeviceFlags`` / ``detachDeviceFlags`` on a real hypervisor, a
redefinition on the test driver, which has neither.

A domain holds a volume in two places, its persistent definition and, while
it runs, the live guest. Each is changed only where the volume is missing
(attach) or present (detach), so a repeated call, or one that follows a call
cut short between the two, does only what is left: attaching what is attached
and detaching what is gone are no-ops. After a change, the instance dir's
``libvirt.xml`` is rewritten from the definition, so that a host recovery
(:meth:`~resizeflow.virt.libvirt.LibvirtDriver.recover`) defines the domain
with its volumes.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path
from typing import Any

from resizeflow.virt.base import VolumeConnection
from resizeflow.virt.connection import XML_INACTIVE, LibvirtConnection
from resizeflow.virt.domain_xml import disk_targets, placed, volume_disk_xml, volume_serials
from resizeflow.virt.layout import write_atomic
from resizeflow.virt.strategy import HostStrategy


class _Held:
    """Where a domain holds its disks now: its definition and, if it runs, its live guest."""

    def __init__(self, conn: LibvirtConnection, dom: Any) -> None:
        self._config_xml = conn.call(dom.XMLDesc, XML_INACTIVE)
        self._live_xml = conn.live_xml(dom)
        self.config = disk_targets(self._config_xml)
        self.running = self._live_xml is not None
        self.live = disk_targets(self._live_xml) if self._live_xml is not None else {}

    def device(self, volume_id: str) -> str | None:
        """The target the volume is at, live first; None if the domain does not hold it."""
        for targets in (self.live, self.config):
            for dev, serial in targets.items():
                if serial == volume_id:
                    return dev
        return None

    def disk_xml(self, volume_id: str) -> str | None:
        """The volume's ``<disk>`` as the guest holds it if it does, else as the definition does."""
        xml = self._live_xml if volume_id in self.live.values() else None
        # libvirtd's own XML, not user input.
        root = ET.fromstring(xml or self._config_xml)  # noqa: S314
        for disk in root.iter("disk"):
            if disk.findtext("serial") == volume_id:
                return ET.tostring(disk, encoding="unicode")
        return None


def _save(conn: LibvirtConnection, dom: Any, xml_file: Path) -> None:
    if xml_file.parent.is_dir():
        write_atomic(xml_file, conn.call(dom.XMLDesc, XML_INACTIVE))


def attach(
    conn: LibvirtConnection, host: HostStrategy, dom: Any, vol: VolumeConnection, xml_file: Path
) -> str:
    """Attach where missing; the device the volume is at (see :func:`placed`)."""
    held = _Held(conn, dom)
    device = held.device(vol.volume_id)
    vol = placed(vol, {*held.config, *held.live}) if device is None else replace(vol, device=device)
    in_config = vol.volume_id in held.config.values()
    live = held.running and vol.volume_id not in held.live.values()
    host.attach_disk(dom, volume_disk_xml(vol), config=not in_config, live=live)
    _save(conn, dom, xml_file)
    return vol.device


def detach(
    conn: LibvirtConnection,
    host: HostStrategy,
    dom: Any,
    volume_id: str,
    xml_file: Path,
    deadline: float | None,
) -> None:
    held = _Held(conn, dom)
    in_config, in_live = volume_id in held.config.values(), volume_id in held.live.values()
    disk = held.disk_xml(volume_id)
    if disk is None:
        return
    host.detach_disk(dom, disk, volume_id, config=in_config, live=in_live, deadline=deadline)
    _save(conn, dom, xml_file)


def attached(conn: LibvirtConnection, dom: Any) -> dict[str, str]:
    """The volumes the domain's definition holds: volume id to target device."""
    return volume_serials(conn.call(dom.XMLDesc, XML_INACTIVE))
