"""The libvirt domain XML of an instance, shaped like the one Nova generates.

For a simple instance Nova writes: the flavor in its ``nova:`` metadata, SMBIOS
system info naming OpenStack Nova, the machine type, vCPUs and memory from the
flavor, ACPI and APIC, a UTC clock with Nova's timers, virtio disks (``vda``
root, ``vdb`` ephemeral, then swap; then each volume, at the target its
attachment names, an NBD export with the volume id as its serial), one bridge
interface per port with a virtio model and a tap target, a serial console
logged to ``console.log`` in the instance directory, and a virtio memory
balloon. With a kernel and ramdisk in the instance directory, the domain boots
them directly.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from resizeflow.conf.netnames import device_name
from resizeflow.errors import VirtError
from resizeflow.virt import disks
from resizeflow.virt.base import InstanceSpec, VolumeConnection

NOVA_NS = "http://openstack.org/xmlns/libvirt/nova/1.0"


@dataclass(frozen=True)
class HostConfig:
    """What the XML needs from the host rather than the instance."""

    virt_type: str
    machine: str
    # The bridge name template (``{vni}``, ``{host}``) and the host it names for:
    # each NIC goes into its network's bridge.
    bridge: str
    host: str = ""
    disk_cache: str = "none"
    arch: str = "x86_64"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def _disk(devices: ET.Element, path: Path, dev: str, cache: str) -> None:
    disk = _sub(devices, "disk", type="file", device="disk")
    _sub(disk, "driver", name="qemu", type="qcow2", cache=cache)
    _sub(disk, "source", file=str(path))
    _sub(disk, "target", dev=dev, bus="virtio")


def volume_disk(vol: VolumeConnection) -> ET.Element:
    """A volume's ``<disk>``, as Nova writes a network volume's: the export as
    its source, and the volume id as its serial, which the guest reads from
    ``/sys/block/vdX/serial`` to tell volumes apart. The same element goes in
    a domain's definition and in an attach or detach request."""
    disk = ET.Element("disk", type="network", device="disk")
    # NOTE: no host cache: a write the guest flushed is on the storage host,
    # whichever compute host the guest runs on next.
    _sub(disk, "driver", name="qemu", type="raw", cache="none")
    source = _sub(disk, "source", protocol="nbd", name=vol.export)
    _sub(source, "host", name=vol.host, port=str(vol.port))
    _sub(disk, "target", dev=vol.device, bus="virtio")
    _sub(disk, "serial", vol.volume_id)
    if vol.read_only:
        _sub(disk, "readonly")
    return disk


def volume_disk_xml(vol: VolumeConnection) -> str:
    return ET.tostring(volume_disk(vol), encoding="unicode")


def placed(vol: VolumeConnection, taken: Iterable[str]) -> VolumeConnection:
    """The volume at its device, or at the first free ``vdX`` if another disk has it.

    NOTE: the local disks come first and depend on the flavor (a resize can
    add an ephemeral disk at ``vdb``), so an attachment's device is where the
    volume goes only while that name is free. The guest does not care: it
    names disks in the order it finds them, and tells volumes by serial.
    """
    used = set(taken)
    if vol.device not in used:
        return vol
    for letter in "bcdefghijklmnopqrstuvwxyz":
        if f"vd{letter}" not in used:
            return replace(vol, device=f"vd{letter}")
    raise VirtError(reason=f"no virtio disk name is free for volume {vol.volume_id}")


def volume_disks(taken: Iterable[str], volumes: Sequence[VolumeConnection]) -> list[ET.Element]:
    """The ``<disk>`` of each volume, placed after the disks named in ``taken``."""
    used, found = set(taken), []
    for vol in volumes:
        vol = placed(vol, used)
        used.add(vol.device)
        found.append(volume_disk(vol))
    return found


def disk_targets(xml: str) -> dict[str, str]:
    """Every disk of a domain XML by target device: its serial, or "" for a local disk."""
    # libvirtd's or our own XML, not user input.
    root = ET.fromstring(xml)  # noqa: S314
    found = {}
    for disk in root.iter("disk"):
        target = disk.find("target")
        if target is not None and target.get("dev"):
            found[target.get("dev", "")] = disk.findtext("serial") or ""
    return found


def volume_serials(xml: str) -> dict[str, str]:
    """The volumes a domain XML holds: serial (volume id) to target device."""
    return {serial: dev for dev, serial in disk_targets(xml).items() if serial}


def domain_xml(
    inst: InstanceSpec,
    inst_dir: Path,
    host: HostConfig,
    name: str,
    domain_uuid: str,
    volumes: Sequence[VolumeConnection] = (),
) -> str:
    ET.register_namespace("nova", NOVA_NS)
    dom = ET.Element("domain", type=host.virt_type)
    _sub(dom, "uuid", domain_uuid)
    _sub(dom, "name", name)
    _sub(dom, "memory", str(inst.memory_mb * 1024))
    _sub(dom, "vcpu", str(inst.vcpus))

    meta = _sub(dom, "metadata")
    nova = _sub(meta, f"{{{NOVA_NS}}}instance")
    _sub(nova, f"{{{NOVA_NS}}}package", version="resizeflow")
    flavor = _sub(nova, f"{{{NOVA_NS}}}flavor", name=inst.flavor_name)
    for tag, size in (
        ("memory", inst.memory_mb),
        ("disk", inst.root_gb),
        ("swap", inst.swap_mb),
        ("ephemeral", inst.ephemeral_gb),
        ("vcpus", inst.vcpus),
    ):
        _sub(flavor, f"{{{NOVA_NS}}}{tag}", str(size))
    if inst.image is not None:
        _sub(nova, f"{{{NOVA_NS}}}root", type="image", uuid=inst.image.id)

    sysinfo = _sub(dom, "sysinfo", type="smbios")
    system = _sub(sysinfo, "system")
    for name, value in (
        ("manufacturer", "OpenStack Foundation"),
        ("product", "OpenStack Nova"),
        ("serial", inst.uuid),
        # libvirt requires the domain's own UUID here (the instance's, unless per host).
        ("uuid", domain_uuid),
        ("family", "Virtual Machine"),
    ):
        _sub(system, "entry", value, name=name)

    os_el = _sub(dom, "os")
    _sub(os_el, "type", "hvm", arch=host.arch, machine=host.machine)
    kernel = inst_dir / disks.KERNEL
    if inst.image is not None and inst.image.kernel:
        _sub(os_el, "kernel", str(kernel))
        if inst.image.ramdisk:
            _sub(os_el, "initrd", str(inst_dir / disks.RAMDISK))
        _sub(os_el, "cmdline", inst.image.cmdline or "root=/dev/vda console=ttyS0")
    else:
        _sub(os_el, "boot", dev="hd")
    _sub(os_el, "smbios", mode="sysinfo")

    features = _sub(dom, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    if host.virt_type == "kvm":
        _sub(dom, "cpu", mode="host-model", match="exact")
    clock = _sub(dom, "clock", offset="utc")
    _sub(clock, "timer", name="pit", tickpolicy="delay")
    _sub(clock, "timer", name="rtc", tickpolicy="catchup")
    _sub(clock, "timer", name="hpet", present="no")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")

    devices = _sub(dom, "devices")
    names = iter("abcdefghijklmnopqrstuvwxyz")
    local = []
    for filename in (disks.ROOT, disks.EPHEMERAL, disks.SWAP):
        if (filename == disks.ROOT) or (
            (inst_dir / filename).exists()
            and (
                (filename == disks.EPHEMERAL and inst.ephemeral_gb)
                or (filename == disks.SWAP and inst.swap_mb)
            )
        ):
            local.append(f"vd{next(names)}")
            _disk(devices, inst_dir / filename, local[-1], host.disk_cache)
    # Volumes after the local disks, as Nova orders its block devices.
    devices.extend(volume_disks(local, volumes))
    for vif in inst.vifs:
        iface = _sub(devices, "interface", type="bridge")
        _sub(iface, "mac", address=vif.mac_address)
        _sub(iface, "model", type="virtio")
        _sub(iface, "source", bridge=device_name(host.bridge, vni=vif.vni, host=host.host))
        _sub(iface, "target", dev=vif.tap)
    serial = _sub(devices, "serial", type="file")
    # Appended, not truncated: the log keeps what the guest printed at each boot.
    _sub(serial, "source", path=str(inst_dir / "console.log"), append="on")
    _sub(devices, "serial", type="pty")
    balloon = _sub(devices, "memballoon", model="virtio")
    _sub(balloon, "stats", period="10")
    ET.indent(dom)
    return ET.tostring(dom, encoding="unicode") + "\n"
