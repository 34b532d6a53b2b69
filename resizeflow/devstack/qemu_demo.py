"""What ``resizeflow demo --hypervisor qemu`` adds: real guests, and what they reported.

The demo's hosts share this machine's libvirtd; each host gets its own
instance dir, bridge and domain names. The test guest (see
:mod:`resizeflow.devstack.guest`) is the default image, booted with small
flavors so that a handful of TCG guests fit on a laptop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from rich.table import Table
from sqlalchemy import select

from resizeflow.compute.flavors import FlavorAdmin
from resizeflow.compute.policy import RequestContext
from resizeflow.conf import Settings
from resizeflow.db.models import Flavor, Instance
from resizeflow.db.session import Database
from resizeflow.devstack import guest, libvirtd
from resizeflow.devstack.guest import ConsoleReport
from resizeflow.devstack.stack import free_udp_port
from resizeflow.virt import vifs

# (flavorid, name, vcpus, MiB, root GiB, ephemeral GiB, swap MiB)
FLAVORS = (
    ("demo-small", "demo.small", 1, 128, 1, 0, 0),
    ("demo-big", "demo.big", 2, 256, 2, 1, 32),
)
GUEST_DIR = Path("var") / "guest"
GUEST_IMAGE = guest.IMAGE_NAME


def load_guest(api_url: str) -> str:
    """Upload the built guest through the stack's image API, as an operator would."""
    return guest.upload(f"{api_url}/image", guest.build(GUEST_DIR), GUEST_IMAGE)


def prepare(state_dir: Path) -> dict[str, str]:
    """Start libvirtd and build the guest; the settings the demo's processes need.

    The guest is the default image by name: it is uploaded (:func:`load_guest`)
    once the stack's API runs, and every boot finds it then.
    """
    libvirtd.ensure_running()
    guest.build(GUEST_DIR)
    return {
        "RESIZEFLOW_LIBVIRT_URI": "qemu:///system",
        # The demo's hosts are one machine: disks move through its filesystem.
        "RESIZEFLOW_REMOTE_FILESYSTEM_TRANSPORT": "local",
        "RESIZEFLOW_DEFAULT_IMAGE": GUEST_IMAGE,
        "RESIZEFLOW_INSTANCE_NAME_TEMPLATE": "demo-{host}-{uuid}",
        "RESIZEFLOW_SHUTDOWN_TIMEOUT": "30",
        "RESIZEFLOW_SHUTDOWN_RETRY_INTERVAL": "2",
    }


def host_env(hosts: list[str], prefix: str = "rfd") -> dict[str, dict[str, str]]:
    """Each demo host's own bridge and VXLAN device names and tunnel endpoint.

    The hosts share one machine: each needs bridges of its own (a tap is only
    ever removed from its own host's bridge), and VXLAN devices of the same
    VNI only coexist on different UDP ports. ``prefix`` (at most 5 characters)
    keeps two stacks' devices apart.
    """
    return {
        host: {
            "RESIZEFLOW_BRIDGE": f"{prefix}{i}b{{vni}}",
            "RESIZEFLOW_VXLAN_DEVICE": f"{prefix}{i}x{{vni}}",
            "RESIZEFLOW_TUNNEL_ADDRESS": f"127.0.0.{50 + i}",
            "RESIZEFLOW_VXLAN_PORT": str(free_udp_port(f"127.0.0.{50 + i}")),
        }
        for i, host in enumerate(hosts, start=1)
    }


def create_flavors(database: Database) -> tuple[str, str]:
    """The demo's small and big flavors; returns their ids."""
    admin = FlavorAdmin(database)
    with database.snapshot() as s:
        have = set(s.scalars(select(Flavor.flavorid)))
    for fid, name, vcpus, ram, disk, eph, swap in FLAVORS:
        if fid not in have:
            admin.create(
                RequestContext.admin(),
                name=name,
                ram=ram,
                vcpus=vcpus,
                disk=disk,
                flavorid=fid,
                ephemeral=eph,
                swap=swap,
            )
    return FLAVORS[0][0], FLAVORS[1][0]


@dataclass
class GuestWatch:
    """Reads each guest's console: what it saw at boot, and after its resize."""

    settings: Settings
    database: Database
    before: dict[str, ConsoleReport] = field(default_factory=dict)
    boot_host: dict[str, str] = field(default_factory=dict)
    after: dict[str, ConsoleReport | None] = field(default_factory=dict)

    def _reports(self, uuid: str) -> tuple[str, list[ConsoleReport]]:
        with self.database.snapshot() as s:
            inst = s.get(Instance, uuid)
            host = inst.host if inst is not None and inst.host else ""
        log = self.settings.instances_dir(host) / uuid / "console.log"
        text = log.read_text(errors="replace") if host and log.exists() else ""
        return host, guest.parse_console(text)

    def _wait(self, uuid: str, count: int, timeout: float) -> list[ConsoleReport]:
        deadline = time.monotonic() + timeout
        while True:
            _, reports = self._reports(uuid)
            if len(reports) >= count or time.monotonic() > deadline:
                return reports
            time.sleep(0.5)

    def record_boot(self, uuids: list[str], timeout: float = 180.0) -> None:
        for uuid in uuids:
            self.boot_host[uuid] = self._reports(uuid)[0]
            reports = self._wait(uuid, 1, timeout)
            if reports:
                self.before[uuid] = reports[0]

    def record_end(self, uuids: list[str], running: set[str], timeout: float = 180.0) -> None:
        for uuid in uuids:
            if uuid not in running:
                self.after[uuid] = None
                continue
            host, _ = self._reports(uuid)
            # Back on its first host (a revert), its console holds the first boot too.
            count = 2 if host == self.boot_host.get(uuid) else 1
            reports = self._wait(uuid, count, timeout)
            self.after[uuid] = reports[-1] if len(reports) >= count else None

    def table(self, names: dict[str, str]) -> Table:
        table = Table(title="what each guest reported", title_justify="left")
        for col in ("server", "before: cpus / MemTotal / disks", "after", "root-disk marker"):
            table.add_column(col)
        for uuid, name in names.items():
            b, a = self.before.get(uuid), self.after.get(uuid)
            marker = ""
            if b and a:
                marker = "kept" if a.marker == b.marker and not a.marker_written else "LOST"
            table.add_row(name, _fmt(b), _fmt(a) if a else "shut off (not booted)", marker)
        return table


def cleanup(settings: Settings, database: Database, hosts: dict[str, dict[str, str]]) -> None:
    """Remove the demo's guests from libvirtd, their files, and the hosts' bridges.

    NOTE: the guests outlive the demo's workers (QEMU runs under libvirtd), so
    without this every demo would leave its guests running.
    """
    from resizeflow.virt.libvirt import LibvirtDriver

    with database.snapshot() as s:
        uuids = list(s.scalars(select(Instance.uuid)))
    for host, env in hosts.items():
        own = replace(
            settings.with_host(host),
            bridge=env["RESIZEFLOW_BRIDGE"],
            vxlan_device=env["RESIZEFLOW_VXLAN_DEVICE"],
            tunnel_address=env["RESIZEFLOW_TUNNEL_ADDRESS"],
        )
        driver = LibvirtDriver.from_settings(own)
        for uuid in uuids:
            driver.purge(uuid)
        vifs.remove_devices(vifs.own_devices(own.vxlan_device, host))
        vifs.remove_devices(vifs.own_devices(own.bridge, host))


def _size(size: int) -> str:
    return f"{size / 1024**3:g}G" if size >= 1024**3 else f"{size / 1024**2:g}M"


def _fmt(r: ConsoleReport | None) -> str:
    if r is None:
        return "-"
    disks = ", ".join(f"{d} {_size(size)}" for d, size in sorted(r.disks.items()))
    return f"{r.nproc} / {r.memtotal_kb} kB / {disks}"
