"""Driving the vm stack through the REST API, and looking at what each host really has."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import libvirt
from sqlalchemy import func, select

from resizeflow.db.models import Allocation, Migration, Port
from resizeflow.devstack.guest import (
    ConsoleReport,
    GuestFiles,
    VolumeReport,
    parse_console,
    parse_volumes,
)
from resizeflow.openstack.base import VifSpec
from resizeflow.virt import vifs
from tests.support.hosts import Hosts
from tests.support.stack import Stack, wait_for

GiB = 1024**3
MiB = 1024**2
# The test guest's flavors: small enough that several guests fit on 2 cores.
SMALL = {"id": "rf-small", "name": "rf.small", "vcpus": 1, "ram": 128, "disk": 1}
BIG = {
    "id": "rf-big",
    "name": "rf.big",
    "vcpus": 2,
    "ram": 256,
    "disk": 2,
    "OS-FLV-EXT-DATA:ephemeral": 1,
    "swap": 32,
}
BOOT = 120.0  # a boot under TCG takes 5-10 s alone; several at once on 2 cores take longer


@dataclass
class VmStack:
    stack: Stack
    image_id: str
    files: GuestFiles
    run_id: str
    # The hosts' sshd processes, addresses and keys (tests.support.hosts).
    hosts: Hosts
    # Each host's own bridge and VXLAN names and tunnel port (qemu_demo.host_env):
    # the hosts share this machine.
    net_env: dict[str, dict[str, str]] = field(default_factory=dict)
    _conn: Any = field(default=None, repr=False)

    def worker_env(self, host: str) -> dict[str, str]:
        """What a worker of ``host`` is started with on top of the stack's settings."""
        (found,) = (h for h in self.hosts.hosts if h.name == host)
        return {"RESIZEFLOW_MIGRATION_ADDRESS": found.address, **self.net_env.get(host, {})}

    def bridges(self, host: str) -> list[str]:
        """The network bridges ``host`` has made on this machine."""
        return vifs.own_devices(self.net_env[host]["RESIZEFLOW_BRIDGE"], host)

    def dhcp_bridge(self, vni: int) -> str:
        """The DHCP host's bridge of network ``vni``: the only one not a compute host's."""
        settings = self.stack.settings
        return settings.bridge_for(settings.dhcp_host, vni)

    def remove_network_devices(self) -> None:
        """Every host's bridges and VXLAN devices: what a run leaves on the machine."""
        for host, env in self.net_env.items():
            vifs.remove_devices(vifs.own_devices(env["RESIZEFLOW_VXLAN_DEVICE"], host))
            vifs.remove_devices(vifs.own_devices(env["RESIZEFLOW_BRIDGE"], host))

    # -- the REST API ---------------------------------------------------------
    def client(self, project: str = "admin") -> httpx.Client:
        return httpx.Client(
            base_url=self.stack.api_endpoint(),
            headers={"X-Auth-Token": f"admin:{project}"},
            timeout=30.0,
        )

    def create_flavors(self) -> None:
        with self.client() as c:
            for flavor in (SMALL, BIG):
                r = c.post("/flavors", json={"flavor": flavor})
                assert r.status_code == 200, r.text

    def create_flavor(self, flavor: dict[str, Any]) -> None:
        """Create ``flavor`` unless a test before created it."""
        with self.client() as c:
            r = c.post("/flavors", json={"flavor": flavor})
            assert r.status_code in (200, 409), r.text

    def boot(
        self,
        project: str,
        host: str,
        *,
        image_ref: str | None = None,
        flavor: str = SMALL["id"],
        networks: list[dict[str, str]] | None = None,
    ) -> str:
        body: dict[str, Any] = {
            "name": f"vm-{project}",
            "flavorRef": flavor,
            "availability_zone": f"nova:{host}",
        }
        if networks is not None:
            body["networks"] = networks
        if image_ref:
            body["imageRef"] = image_ref
        with self.client(project) as c:
            r = c.post("/servers", json={"server": body})
            assert r.status_code == 202, r.text
            return str(r.json()["server"]["id"])

    def show(self, sid: str) -> dict[str, Any]:
        with self.client() as c:
            r = c.get(f"/servers/{sid}")
            assert r.status_code == 200, r.text
            server: dict[str, Any] = r.json()["server"]
            return server

    def action(self, sid: str, body: dict[str, Any]) -> None:
        with self.client() as c:
            r = c.post(f"/servers/{sid}/action", json=body)
            # Nova answers confirmResize with 204, the other actions with 202.
            assert r.status_code == (204 if "confirmResize" in body else 202), r.text

    def delete(self, sid: str) -> None:
        with self.client() as c:
            r = c.delete(f"/servers/{sid}")
            assert r.status_code == 204, r.text

    def wait_status(self, sid: str, status: str, timeout: float = BOOT) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            server = self.show(sid)
            if server["status"] == "ERROR" and status != "ERROR":
                raise AssertionError(f"{sid} went to ERROR: {server.get('fault')}")
            task = server.get("OS-EXT-STS:task_state")
            return server if server["status"] == status and task is None else None

        return wait_for(ready, timeout, f"{sid} to be {status}")

    def wait_gone(self, sid: str, timeout: float = 60.0) -> None:
        def gone() -> bool:
            with self.client() as c:
                return c.get(f"/servers/{sid}").status_code == 404

        wait_for(gone, timeout, f"{sid} to be deleted")

    # -- the hosts --------------------------------------------------------------
    def conn(self) -> Any:
        # A libvirtd restart (the failure tests make one) breaks an open connection.
        if self._conn is not None and not self._conn.isAlive():
            self._conn = None
        if self._conn is None:
            self._conn = libvirt.open("qemu:///system")
        return self._conn

    def domain_name(self, host: str, sid: str) -> str:
        return self.stack.settings.instance_name_template.format(host=host, uuid=sid)

    def domain_state(self, host: str, sid: str) -> str | None:
        """``running``, ``shutoff``, ``paused``...; None when the host has no such domain."""
        for attempt in (1, 2):
            try:
                dom = self.conn().lookupByName(self.domain_name(host, sid))
                break
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return None
                # A connection from before a libvirtd restart: open a new one, once.
                self._conn = None
                if attempt == 2:
                    raise
        names = {
            libvirt.VIR_DOMAIN_RUNNING: "running",
            libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
            libvirt.VIR_DOMAIN_PAUSED: "paused",
        }
        return names.get(dom.state()[0], str(dom.state()[0]))

    def inst_dir(self, host: str, sid: str, suffix: str = "") -> Path:
        return self.stack.instance_dir(host, sid, suffix)

    def taps(self, host: str) -> list[str]:
        """The taps on ``host``'s network bridges now."""
        return sorted(tap for bridge in self.bridges(host) for tap in vifs.taps_on(bridge))

    def tap_of(self, sid: str) -> str:
        """The tap of the server's one port, as Nova names it."""
        with self.stack.db.snapshot() as s:
            (port_id,) = s.scalars(select(Port.id).where(Port.instance_uuid == sid))
        return VifSpec(port_id, "").tap

    def reports(self, host: str, sid: str) -> list[ConsoleReport]:
        log = self.inst_dir(host, sid) / "console.log"
        return parse_console(log.read_text(errors="replace")) if log.exists() else []

    def volume_reports(self, host: str, sid: str) -> list[VolumeReport]:
        """What the guest on ``host`` said about its volumes, oldest first."""
        log = self.inst_dir(host, sid) / "console.log"
        return parse_volumes(log.read_text(errors="replace")) if log.exists() else []

    def wait_reports(
        self, host: str, sid: str, count: int, timeout: float = BOOT
    ) -> list[ConsoleReport]:
        """Wait until the guest's console on ``host`` holds ``count`` boot reports."""
        return wait_for(
            lambda: r if len(r := self.reports(host, sid)) >= count else None,
            timeout,
            f"{count} boot report(s) of {sid} on {host}",
        )

    def console(self, host: str, sid: str) -> str:
        log = self.inst_dir(host, sid) / "console.log"
        return log.read_text(errors="replace") if log.exists() else ""

    def allocations(self, *consumers: str) -> int:
        with self.stack.db.snapshot() as s:
            return int(
                s.scalar(
                    select(func.count(Allocation.id)).where(Allocation.consumer_uuid.in_(consumers))
                )
                or 0
            )

    def migration_ids(self, sid: str) -> list[int]:
        with self.stack.db.snapshot() as s:
            return list(s.scalars(select(Migration.id).where(Migration.instance_uuid == sid)))

    def migration_uuids(self, sid: str) -> list[str]:
        with self.stack.db.snapshot() as s:
            return list(s.scalars(select(Migration.uuid).where(Migration.instance_uuid == sid)))

    def destroy_leftover_domains(self) -> None:
        prefix = f"rf{self.run_id}-"
        try:
            conn = self.conn()
            for dom in conn.listAllDomains(0):
                if dom.name().startswith(prefix):
                    if dom.isActive():
                        dom.destroy()
                    dom.undefine()
        except libvirt.libvirtError:
            pass


def assert_report(
    report: ConsoleReport, *, vcpus: int, disks: dict[str, int], marker: str | None = None
) -> None:
    """What the guest saw: its CPUs and each virtio disk's size, and its marker."""
    assert report.nproc == vcpus, report
    assert report.disks == disks, report
    if marker is not None:
        assert report.marker == marker and not report.marker_written, report


def wait_volume_report(
    reports: Callable[[], list[VolumeReport]],
    what: str,
    match: Callable[[VolumeReport], bool],
    after: int = 0,
) -> tuple[int, VolumeReport]:
    """The first of ``reports()`` from the ``after``-th on that ``match`` accepts, and its index."""

    def found() -> tuple[int, VolumeReport] | None:
        for i, r in enumerate(reports()[after:], start=after):
            if match(r):
                return i, r
        return None

    return wait_for(found, BOOT, what)


def small_disks() -> dict[str, int]:
    return {"vda": 1 * GiB}


def big_disks() -> dict[str, int]:
    return {"vda": 2 * GiB, "vdb": 1 * GiB, "vdc": 32 * MiB}


def timed(start: float) -> float:
    return round(time.monotonic() - start, 1)
