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
from pathlib import Path
from typing import Any

from resizeflow.virt.base import VolumeConnection
from resizeflow.virt.connection import MISSING, XML_INACTIVE, LibvirtConnection
from resizeflow.virt.domain_xml import volume_disk_xml, volume_serials
from resizeflow.virt.layout import write_atomic
from resizeflow.virt.strategy import HostStrategy


def _where(conn: LibvirtConnection, dom: Any, volume_id: str) -> tuple[str | None, bool, bool]:
    """The volume's ``<disk>`` as the domain holds it (None if nowhere), and
    whether its definition and its live guest hold it."""
    config_xml: str = conn.call(dom.XMLDesc, XML_INACTIVE)
    live_xml: str | None = conn.call(dom.XMLDesc, 0, ok=MISSING) if conn.is_active(dom) else None
    in_config = volume_id in volume_serials(config_xml)
    in_live = live_xml is not None and volume_id in volume_serials(live_xml)
    disk = _disk_of(live_xml if live_xml is not None and in_live else config_xml, volume_id)
    return disk, in_config, in_live


def _disk_of(xml: str, volume_id: str) -> str | None:
    # libvirtd's own XML, not user input.
    for disk in ET.fromstring(xml).iter("disk"):  # noqa: S314
        if disk.findtext("serial") == volume_id:
            return ET.tostring(disk, encoding="unicode")
    return None


def _save(conn: LibvirtConnection, dom: Any, xml_file: Path) -> None:
    if xml_file.parent.is_dir():
        write_atomic(xml_file, conn.call(dom.XMLDesc, XML_INACTIVE))


def attach(
    conn: LibvirtConnection, host: HostStrategy, dom: Any, vol: VolumeConnection, xml_file: Path
) -> None:
    _, in_config, in_live = _where(conn, dom, vol.volume_id)
    live = conn.is_active(dom) and not in_live
    if in_config and not live:
        return
    host.attach_disk(dom, volume_disk_xml(vol), config=not in_config, live=live)
    _save(conn, dom, xml_file)


def detach(
    conn: LibvirtConnection,
    host: HostStrategy,
    dom: Any,
    volume_id: str,
    xml_file: Path,
    deadline: float | None,
) -> None:
    disk, in_config, in_live = _where(conn, dom, volume_id)
    if disk is None:
        return
    host.detach_disk(dom, disk, volume_id, config=in_config, live=in_live, deadline=deadline)
    _save(conn, dom, xml_file)


def attached(conn: LibvirtConnection, dom: Any) -> dict[str, str]:
    """The volumes the domain's definition holds: volume id to target device."""
    return volume_serials(conn.call(dom.XMLDesc, XML_INACTIVE))
