"""NICs on a host: taps on their network's Linux bridge, the bridge joined to the
network's other hosts by VXLAN, as Neutron's linuxbridge agent does it.

Each network has, on every host that plugs one of its ports, a bridge and a
VXLAN device of the network's VNI enslaved to it. The VXLAN device is made
with ``nolearning``: it never learns where a MAC is from the packets it
receives, and sends every broadcast, unknown unicast and multicast frame to
each entry of its flood list (an all-zeros MAC with a peer's address and
port), one copy per peer. That costs one copy per host for each ARP request
or DHCP discover, which is fine for tens of hosts; it is also what makes
hosts that listen on different UDP ports work (the tests run several on one
machine), where learning would record the sender's source port, not the one
it listens on.

libvirt creates each tap (``<interface type='bridge'>`` with a target name)
and adds it to the bridge when the domain starts, and removes it when the
domain stops. Plugging therefore makes sure the bridge, the VXLAN device and
the flood list exist; unplugging removes a tap the domain left behind (a
crashed QEMU, a libvirtd restart), as Nova's ``unplug_vifs`` does. A tap is
only ever removed from one of this host's own bridges: on one machine running
two hosts, the other host's tap of the same port may be the one in use.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from resizeflow.conf.netnames import device_name, own_names
from resizeflow.errors import VirtError
from resizeflow.openstack.base import TunnelPeer

if TYPE_CHECKING:
    from resizeflow.conf import Settings

SYS_NET = Path("/sys/class/net")
FLOOD_MAC = "00:00:00:00:00:00"
# A flood entry: a peer's address and the UDP port its VXLAN devices listen on.
Remote = tuple[str, int]


def _run(*argv: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise VirtError(reason=f"{' '.join(argv)} failed: {proc.stderr.strip()}")
    return proc.stdout


def _ip(*args: str) -> str:
    return _run("ip", *args)


def exists(dev: str) -> bool:
    return (SYS_NET / dev).exists()


def master(dev: str) -> str | None:
    """The bridge ``dev`` is enslaved to, if any."""
    link = SYS_NET / dev / "master"
    return link.resolve().name if link.exists() else None


def ensure_bridge(bridge: str) -> None:
    if not exists(bridge):
        try:
            _ip("link", "add", "name", bridge, "type", "bridge")
        except VirtError:
            if not exists(bridge):  # another worker of this host made it meanwhile
                raise
    _ip("link", "set", "dev", bridge, "up")


@dataclass(frozen=True)
class HostNetworking:
    """How one host names and joins its networks: its device templates, and
    its own tunnel endpoint (``local_ip``, ``port``)."""

    host: str
    bridge_template: str = "brq{vni}"
    vxlan_template: str = "vxlan-{vni}"
    local_ip: str = ""
    port: int = 4789

    @classmethod
    def of(cls, settings: Settings, host: str, *, plugs: bool = True) -> HostNetworking:
        """``host``'s networking as the settings name it; one that never ``plugs``
        (a simulated hypervisor) needs no tunnel address, which may be a host name."""
        return cls(
            host=host,
            bridge_template=settings.bridge,
            vxlan_template=settings.vxlan_device,
            local_ip=settings.tunnel_ip if plugs else "",
            port=settings.vxlan_port,
        )

    def bridge(self, vni: int) -> str:
        return device_name(self.bridge_template, vni=vni, host=self.host)

    def vxlan(self, vni: int) -> str:
        return device_name(self.vxlan_template, vni=vni, host=self.host)

    def vni_of(self, bridge: str) -> int | None:
        """The network whose bridge on this host ``bridge`` is; None if not one of its own."""
        found = own_names(self.bridge_template, self.host).fullmatch(bridge)
        return int(found.group("vni")) if found is not None else None

    def owns_bridge(self, name: str) -> bool:
        """Whether ``name`` is a bridge this host's template gives, for any network."""
        return self.vni_of(name) is not None

    def remotes(self, peers: Iterable[TunnelPeer]) -> set[Remote]:
        """The flood list of this host's VXLAN devices: every endpoint but its own."""
        return {
            (p.ip_address, p.udp_port)
            for p in peers
            if p.host != self.host and (p.ip_address, p.udp_port) != (self.local_ip, self.port)
        }

    def plug_network(self, vni: int, peers: Iterable[TunnelPeer]) -> str:
        """Make network ``vni``'s bridge, VXLAN device and flood list; returns the bridge."""
        bridge, vxlan = self.bridge(vni), self.vxlan(vni)
        ensure_network(bridge, vxlan, vni, self.local_ip, self.port)
        set_peers(vxlan, self.port, self.remotes(peers))
        return bridge


def _vxlan_info(vxlan: str) -> dict[str, object] | None:
    proc = subprocess.run(
        ["ip", "-d", "-j", "link", "show", "dev", vxlan],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        return None
    (link,) = json.loads(proc.stdout)
    info = link.get("linkinfo", {})
    return dict(info.get("info_data", {})) if info.get("info_kind") == "vxlan" else {}


def ensure_network(bridge: str, vxlan: str, vni: int, local_ip: str, port: int) -> None:
    """The network's bridge, and its VXLAN device (id ``vni``, from ``local_ip``,
    on UDP ``port``, no learning) enslaved to it, both up. A device of that
    name made otherwise (an old address or port) is made again."""
    ensure_bridge(bridge)
    wanted = {"id": vni, "local": local_ip, "port": port, "learning": False}
    info = _vxlan_info(vxlan)
    if info is not None and any(info.get(k) != v for k, v in wanted.items()):
        _ip("link", "del", "dev", vxlan)
        info = None
    if info is None:
        try:
            _ip(
                "link", "add", vxlan, "type", "vxlan", "id", str(vni),
                "local", local_ip, "dstport", str(port), "nolearning",
            )  # fmt: skip
        except VirtError:
            if not exists(vxlan):  # another worker of this host made it meanwhile
                raise
    if master(vxlan) != bridge:
        _ip("link", "set", "dev", vxlan, "master", bridge)
    _ip("link", "set", "dev", vxlan, "up")


def remove_network(bridge: str, vxlan: str) -> None:
    """Remove a network's VXLAN device and bridge, where they exist."""
    for dev in (vxlan, bridge):
        if exists(dev):
            try:
                _ip("link", "del", "dev", dev)
            except VirtError:
                if exists(dev):
                    raise


def parse_flood_entries(fdb_json: str, own_port: int) -> set[Remote]:
    """The flood list in ``bridge -j fdb show dev VXLAN``'s output. An entry
    without a port uses the device's own (``own_port``): the kernel leaves it
    out when they are equal."""
    return {
        (str(e["dst"]), int(e.get("port", own_port)))
        for e in json.loads(fdb_json or "[]")
        if e.get("mac") == FLOOD_MAC and "dst" in e
    }


def flood_changes(current: set[Remote], wanted: set[Remote]) -> tuple[set[Remote], set[Remote]]:
    """What to append to and delete from a flood list: (missing, gone)."""
    return wanted - current, current - wanted


def flood_entries(vxlan: str, own_port: int) -> set[Remote]:
    return parse_flood_entries(_run("bridge", "-j", "fdb", "show", "dev", vxlan), own_port)


def set_peers(vxlan: str, own_port: int, wanted: set[Remote]) -> tuple[set[Remote], set[Remote]]:
    """Make the device's flood list ``wanted``: entries for new peers appended,
    those of peers that are gone deleted. Returns (appended, deleted)."""
    add, gone = flood_changes(flood_entries(vxlan, own_port), wanted)
    for ip, port in sorted(add):
        try:
            _run("bridge", "fdb", "append", FLOOD_MAC, "dev", vxlan, "dst", ip, "port", str(port))
        except VirtError:
            # Another worker of this host appended it meanwhile.
            if (ip, port) not in flood_entries(vxlan, own_port):
                raise
    for ip, port in sorted(gone):
        try:
            _run("bridge", "fdb", "del", FLOOD_MAC, "dev", vxlan, "dst", ip, "port", str(port))
        except VirtError:
            if (ip, port) in flood_entries(vxlan, own_port):
                raise
    return add, gone


def own_devices(template: str, host: str) -> list[str]:
    """The devices of this machine that ``template`` names on ``host``, for any network."""
    pattern = own_names(template, host)
    return sorted(p.name for p in SYS_NET.iterdir() if pattern.fullmatch(p.name))


def remove_devices(names: Iterable[str]) -> None:
    """Remove these devices where they still exist (a cleanup's)."""
    for dev in names:
        if exists(dev):
            subprocess.run(["ip", "link", "del", "dev", dev], capture_output=True, check=False)


def taps_on(bridge: str) -> list[str]:
    """The devices plugged into ``bridge`` now."""
    brif = SYS_NET / bridge / "brif"
    return sorted(p.name for p in brif.iterdir()) if brif.is_dir() else []


def unplug(owns: Callable[[str], bool], taps: Iterable[str]) -> list[str]:
    """Remove those of ``taps`` still on a bridge this host ``owns``; returns the ones removed."""
    removed = []
    for tap in taps:
        if not exists(tap):
            continue
        on = master(tap)
        if on is not None and owns(on):
            try:
                _ip("link", "del", "dev", tap)
            except VirtError:
                if exists(tap):
                    raise
            removed.append(tap)
    return removed
