"""What the network tests need of the machine, and a DHCP client in a namespace of its own.

A client is a namespace with one veth end (the guest's NIC, with a port's
MAC), its other end plugged into a host's bridge; busybox's ``udhcpc`` asks
for a lease there, and its script prints what it was offered.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

TOOLS = ("dnsmasq", "busybox", "ip", "bridge")
SCRIPT = """#!/bin/sh
# udhcpc's event script: print the lease it was given, configure nothing.
[ "$1" = bound ] && echo "LEASE ip=$ip mask=$subnet router=$router mtu=$mtu"
exit 0
"""


def require_tools() -> None:
    """Skip without root, dnsmasq or busybox; in CI (``CI`` set), fail instead."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    why = f"{', '.join(missing)} missing (make hosts-deps vm-deps)" if missing else ""
    if os.geteuid() != 0:
        why = "network namespaces, bridges and VXLAN need root"
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"{why}, and CI needs them")
        pytest.skip(why)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class Client:
    """A namespace ``ns`` whose NIC is plugged into ``bridge`` by the veth ``outside``."""

    def __init__(self, ns: str, bridge: str, script_dir: Path) -> None:
        self.ns, self.bridge = ns, bridge
        self.outside = ns[:12] + "o"
        self.script = script_dir / "udhcpc.sh"
        self.script.write_text(SCRIPT)
        self.script.chmod(0o755)
        _ip("netns", "add", ns)
        _ip("link", "add", self.outside, "type", "veth", "peer", "name", "nic", "netns", ns)
        _ip("link", "set", "dev", self.outside, "master", bridge)
        _ip("link", "set", "dev", self.outside, "up")

    def lease(self, mac: str) -> dict[str, str] | None:
        """What the network's DHCP offers a NIC with ``mac`` now: None if nothing
        (five discovers, two seconds apart)."""
        _ip("-n", self.ns, "link", "set", "dev", "nic", "down")
        _ip("-n", self.ns, "link", "set", "dev", "nic", "address", mac)
        _ip("-n", self.ns, "link", "set", "dev", "nic", "up")
        done = subprocess.run(
            ["ip", "netns", "exec", self.ns, "busybox", "udhcpc", "-i", "nic",
             "-n", "-q", "-f", "-T", "2", "-t", "5", "-s", str(self.script)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        for line in done.stdout.splitlines():
            if line.startswith("LEASE "):
                return dict(kv.split("=", 1) for kv in line.split()[1:])
        return None

    def remove(self) -> None:
        subprocess.run(["ip", "link", "del", "dev", self.outside], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "delete", self.ns], capture_output=True, check=False)
