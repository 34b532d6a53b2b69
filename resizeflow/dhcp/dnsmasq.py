"""One dnsmasq per network, in the network's namespace: DHCP only, for known MACs only.

As Neutron's DHCP agent runs it: no DNS (``--port=0``), bound to the
namespace's one interface, a ``static`` range over the subnet (only a MAC in
the hosts file gets a lease, and always its port's address), the subnet's
gateway as the router option (or no router), the network's MTU. The hosts
file (``MAC,IP`` a line) is rewritten whole and renamed into place, then
dnsmasq is sent SIGHUP, which makes it read the file again.

dnsmasq detaches and writes its pid file: it outlives a killed agent, whose
next start finds it by that file and keeps it if it runs with the same
arguments.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from resizeflow.errors import VirtError

LEASE_SECONDS = 86400
_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 5.0


@dataclass(frozen=True)
class DhcpConfig:
    """What one network's dnsmasq serves, and where its files are."""

    interface: str
    cidr: str
    gateway: str | None
    mtu: int
    directory: Path
    lease_seconds: int = LEASE_SECONDS

    @property
    def pid_file(self) -> Path:
        return self.directory / "pid"

    @property
    def hosts_file(self) -> Path:
        return self.directory / "hosts"

    @property
    def lease_file(self) -> Path:
        return self.directory / "leases"

    @property
    def log_file(self) -> Path:
        return self.directory / "dnsmasq.log"


def argv(cfg: DhcpConfig) -> list[str]:
    """dnsmasq's command line for ``cfg``."""
    net = ipaddress.IPv4Network(cfg.cidr, strict=False)
    router = f"tag:net,option:router,{cfg.gateway}" if cfg.gateway else "tag:net,option:router"
    return [
        "dnsmasq",
        "--conf-file=/dev/null",  # nothing from /etc/dnsmasq.conf
        "--no-hosts",
        "--no-resolv",
        "--port=0",  # no DNS
        "--bind-interfaces",
        f"--interface={cfg.interface}",
        # Root throughout: the hosts file it reads again on SIGHUP is in the agent's
        # private state dir.
        "--user=root",
        "--group=root",
        f"--pid-file={cfg.pid_file}",
        f"--dhcp-hostsfile={cfg.hosts_file}",
        f"--dhcp-leasefile={cfg.lease_file}",
        f"--log-facility={cfg.log_file}",
        "--log-dhcp",
        f"--dhcp-range=set:net,{net.network_address},static,{net.netmask},{cfg.lease_seconds}s",
        # An empty router option sends none, rather than dnsmasq's own address.
        f"--dhcp-option-force={router}",
        f"--dhcp-option-force=tag:net,option:mtu,{cfg.mtu}",
    ]


def hosts_text(entries: Iterable[tuple[str, str]]) -> str:
    """The hosts file: ``MAC,IP`` for each (MAC, IP), sorted, MACs in lower case."""
    lines = sorted({f"{mac.lower()},{ip}" for mac, ip in entries})
    return "".join(line + "\n" for line in lines)


def write_hosts(path: Path, text: str) -> bool:
    """Write the hosts file atomically (a temporary file renamed over it); whether it changed."""
    try:
        if path.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return True


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.decode(errors="replace").split("\0")[:-1] or None


def _pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def running(cfg: DhcpConfig) -> int | None:
    """The pid of the dnsmasq the pid file names, if it runs still."""
    pid = _pid(cfg.pid_file)
    if pid is None:
        return None
    cmd = _cmdline(pid)
    if not cmd or Path(cmd[0]).name != "dnsmasq" or f"--pid-file={cfg.pid_file}" not in cmd:
        return None  # gone, or its pid taken by another process since
    return pid


def running_as(cfg: DhcpConfig) -> int | None:
    """The pid of the dnsmasq that runs with exactly ``argv(cfg)``, if any."""
    pid = running(cfg)
    return pid if pid is not None and _cmdline(pid) == argv(cfg) else None


def start(cfg: DhcpConfig, netns: str) -> int:
    """Start dnsmasq in ``netns``; returns its pid once it has written it."""
    cfg.directory.mkdir(parents=True, exist_ok=True)
    cfg.hosts_file.touch()
    cfg.pid_file.unlink(missing_ok=True)
    proc = subprocess.run(
        ["ip", "netns", "exec", netns, *argv(cfg)],
        capture_output=True,
        text=True,
        check=False,
        timeout=_START_TIMEOUT,
    )
    if proc.returncode != 0:
        raise VirtError(reason=f"dnsmasq in {netns} failed: {proc.stderr.strip()}")
    end = time.monotonic() + _START_TIMEOUT
    while (pid := running(cfg)) is None:
        if time.monotonic() > end:
            raise VirtError(reason=f"dnsmasq in {netns} wrote no pid file")
        time.sleep(0.05)
    return pid


def reload(pid: int) -> None:
    """SIGHUP: dnsmasq reads its hosts file again."""
    os.kill(pid, signal.SIGHUP)


def stop(cfg: DhcpConfig) -> None:
    """Stop the dnsmasq of ``cfg``, if it runs: SIGTERM, then SIGKILL."""
    pid = running(cfg)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + _STOP_TIMEOUT
    while running(cfg) == pid and time.monotonic() < end:
        time.sleep(0.05)
    if running(cfg) == pid:
        os.kill(pid, signal.SIGKILL)
