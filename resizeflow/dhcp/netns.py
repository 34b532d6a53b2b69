"""Network namespaces and the veth pairs that join them to a host's bridges.

Each network the DHCP agent serves gets a namespace of its own, as on
Neutron's network nodes: dnsmasq there sees only that network, and two
networks' overlapping subnets never meet. A veth pair joins it to the
network's bridge: one end in the namespace, with the DHCP port's MAC and
address, the other plugged into the bridge on the host.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from resizeflow.errors import VirtError
from resizeflow.virt import vifs

NETNS_DIR = Path("/run/netns")
# How long a namespace's processes get to exit after SIGTERM before SIGKILL.
_STOP_GRACE = 5.0


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise VirtError(reason=f"ip {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def exists(ns: str) -> bool:
    return (NETNS_DIR / ns).exists()


def names(prefix: str) -> list[str]:
    """The namespaces whose names start with ``prefix``."""
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))


def ensure(ns: str) -> None:
    if not exists(ns):
        proc = _ip("netns", "add", ns, check=False)
        if proc.returncode != 0 and not exists(ns):
            raise VirtError(reason=f"ip netns add {ns} failed: {proc.stderr.strip()}")


def pids(ns: str) -> list[int]:
    """The processes running in namespace ``ns``."""
    proc = _ip("netns", "pids", ns, check=False)
    return [int(p) for p in proc.stdout.split()] if proc.returncode == 0 else []


def _signal_all(found: list[int], sig: signal.Signals) -> None:
    for pid in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def delete(ns: str) -> None:
    """Stop what runs in ``ns`` and remove it: its devices go with it, and the
    other end of each veth with them."""
    if not exists(ns):
        return
    _signal_all(pids(ns), signal.SIGTERM)
    end = time.monotonic() + _STOP_GRACE
    while (left := pids(ns)) and time.monotonic() < end:
        time.sleep(0.05)
    _signal_all(left, signal.SIGKILL)
    proc = _ip("netns", "delete", ns, check=False)
    if proc.returncode != 0 and exists(ns):
        raise VirtError(reason=f"ip netns delete {ns} failed: {proc.stderr.strip()}")


def del_link(dev: str) -> None:
    """Remove a device of the host (a veth end: its peer goes with it)."""
    proc = _ip("link", "del", "dev", dev, check=False)
    if proc.returncode != 0 and vifs.exists(dev):
        raise VirtError(reason=f"ip link del {dev} failed: {proc.stderr.strip()}")


def has_device(ns: str, dev: str) -> bool:
    return _ip("-n", ns, "link", "show", "dev", dev, check=False).returncode == 0


def plug_veth(
    ns: str, *, inside: str, outside: str, mac: str, address: str, bridge: str, mtu: int
) -> None:
    """A veth pair: ``inside`` in ``ns`` with ``mac`` and ``address`` (``ip/prefix``),
    ``outside`` on ``bridge``; both up. What is already there is kept."""
    if not has_device(ns, inside):
        if vifs.exists(outside):  # half a pair, from a predecessor that died making it
            _ip("link", "del", "dev", outside)
        _ip("link", "add", outside, "mtu", str(mtu), "type", "veth",
            "peer", "name", inside, "mtu", str(mtu), "netns", ns)  # fmt: skip
    _ip("-n", ns, "link", "set", "dev", inside, "address", mac)
    _ip("-n", ns, "addr", "replace", address, "dev", inside)
    _ip("-n", ns, "link", "set", "dev", inside, "up")
    _ip("-n", ns, "link", "set", "dev", "lo", "up")
    if vifs.master(outside) != bridge:
        _ip("link", "set", "dev", outside, "master", bridge)
    _ip("link", "set", "dev", outside, "up")
