"""Instance NICs on a host: taps on the host's Linux bridge.

libvirt creates each tap (``<interface type='bridge'>`` with a target name) and
adds it to the bridge when the domain starts, and removes it when the domain
stops. Plugging therefore makes sure the bridge exists and is up; unplugging
removes a tap the domain left behind (a crashed QEMU, a libvirtd restart),
as Nova's ``unplug_vifs`` does. A tap is only ever removed from this host's
own bridge: on one machine running two hosts, the other host's tap of the same
port may be the one in use.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from pathlib import Path

from resizeflow.errors import VirtError

SYS_NET = Path("/sys/class/net")


def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise VirtError(reason=f"ip {' '.join(args)} failed: {proc.stderr.strip()}")


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


def taps_on(bridge: str) -> list[str]:
    """The taps plugged into ``bridge`` now."""
    brif = SYS_NET / bridge / "brif"
    return sorted(p.name for p in brif.iterdir()) if brif.is_dir() else []


def unplug(bridge: str, taps: Iterable[str]) -> list[str]:
    """Remove those of ``taps`` still on ``bridge``; returns the ones removed."""
    removed = []
    for tap in taps:
        if exists(tap) and master(tap) == bridge:
            try:
                _ip("link", "del", "dev", tap)
            except VirtError:
                if exists(tap):
                    raise
            removed.append(tap)
    return removed
