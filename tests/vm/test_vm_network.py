"""A server answers at its fixed IP wherever it runs: before a resize, while the
resize waits to be confirmed, after a revert, and after a resize and confirm.

The test makes its own network through the Networking API (``/network``), and
its own namespace whose only interface is a port of that network, plugged into
the DHCP host's bridge of the network: every packet between the namespace and
the guest crosses the network's VXLAN, whichever compute host the guest is on.
The guest takes its address by DHCP from the network's dnsmasq and serves a
page naming its disk marker and how many times it has booted.
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from resizeflow.devstack.guest import NetReport, PageReport, parse_net, parse_page
from resizeflow.virt import vifs
from tests.support.stack import wait_for
from tests.vm.helpers import BIG, BOOT, SMALL, VmStack

# Fetches the page from inside the namespace: the host's busybox wget cannot
# be trusted with a timeout here, and Python's client can.
_FETCH = (
    "import sys, urllib.request;"
    "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode())"
)


@dataclass
class ProbeNet:
    """The test's network, its subnet, and a namespace on it."""

    network_id: str
    vni: int
    cidr: str
    netns: str

    def fetch(self, address: str, timeout: float = BOOT) -> PageReport:
        """The guest's page at ``address``, asked from the namespace until it answers."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            proc = subprocess.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    self.netns,
                    sys.executable,
                    "-c",
                    _FETCH,
                    f"http://{address}/",
                ],
                capture_output=True,
                text=True,
                check=False,
                timeout=30,
            )
            if proc.returncode == 0:
                return parse_page(proc.stdout)
            last = (proc.stderr.strip().splitlines() or [""])[-1]
            time.sleep(1)
        raise AssertionError(f"no answer from {address} in {timeout:.0f}s: {last}")


def _net_api(vm: VmStack) -> httpx.Client:
    return httpx.Client(
        base_url=vm.stack.api_endpoint().removesuffix("/v2.1") + "/network/v2.0",
        headers={"X-Auth-Token": "admin:admin"},
        timeout=30.0,
    )


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def testnet(vm: VmStack) -> Iterator[ProbeNet]:
    """A network on a range of this run's own, and a namespace holding one of its ports.

    Nothing is routed: the namespace's only route is the subnet's, on its one
    interface, and its host end is plugged into the network's bridge only.
    """
    tag = uuid.uuid4().hex[:6]
    cidr = f"10.{200 + int(tag[:2], 16) % 50}.{int(tag[2:4], 16)}.0/24"
    with _net_api(vm) as api:
        r = api.post("/networks", json={"network": {"name": f"rft-{tag}"}})
        assert r.status_code == 201, r.text
        net = r.json()["network"]
        r = api.post(
            "/subnets",
            json={
                "subnet": {
                    "network_id": net["id"],
                    "cidr": cidr,
                    "ip_version": 4,
                    "gateway_ip": None,
                }
            },
        )
        assert r.status_code == 201, r.text
        r = api.post("/ports", json={"port": {"network_id": net["id"], "name": f"probe-{tag}"}})
        assert r.status_code == 201, r.text
        probe = r.json()["port"]
    netns, inner, outer = f"rft-{tag}", f"rfti{tag}", f"rfto{tag}"
    bridge = vm.dhcp_bridge(net["provider:segmentation_id"])
    prefix = ipaddress.ip_network(cidr).prefixlen
    try:
        # The DHCP host sets the network up once it sees it.
        wait_for(lambda: vifs.exists(bridge), timeout=60, what=f"bridge {bridge}")
        _ip("netns", "add", netns)
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", netns)
        _ip("-n", netns, "link", "set", inner, "address", probe["mac_address"])
        _ip(
            "-n",
            netns,
            "addr",
            "add",
            f"{probe['fixed_ips'][0]['ip_address']}/{prefix}",
            "dev",
            inner,
        )
        _ip("-n", netns, "link", "set", inner, "up")
        _ip("link", "set", outer, "master", bridge, "up")
        yield ProbeNet(net["id"], net["provider:segmentation_id"], cidr, netns)
    finally:
        subprocess.run(["ip", "link", "del", outer], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "del", netns], check=False, capture_output=True)
        with _net_api(vm) as api:
            api.delete(f"/ports/{probe['id']}")
            # The server's port is gone with it by now; the network then goes.
            api.delete(f"/networks/{net['id']}")


def _port(vm: VmStack, sid: str) -> dict[str, Any]:
    with _net_api(vm) as api:
        r = api.get("/ports", params={"device_id": sid})
        assert r.status_code == 200, r.text
        (port,) = r.json()["ports"]
        return dict(port)


def _lease(vm: VmStack, host: str, sid: str, boot: str) -> NetReport:
    """The guest's DHCP lease of boot ``boot``, from its console on ``host``."""

    def found() -> NetReport | None:
        leases = [n for n in parse_net(vm.console(host, sid)) if n.boot == boot]
        return leases[-1] if leases else None

    return wait_for(found, timeout=BOOT, what=f"a DHCP lease on {host} (boot {boot})")


def _answers(vm: VmStack, net: ProbeNet, sid: str, host: str, *, boots: int, marker: str) -> str:
    """Check the guest on ``host`` answers at its port's fixed IP with its MAC, as booted
    ``boots`` times, and that only ``host`` has its tap; returns the port's IP."""
    report = vm.reports(host, sid)[-1]
    assert report.boots == boots and report.marker == marker
    port = _port(vm, sid)
    (fixed,) = port["fixed_ips"]
    lease = _lease(vm, host, sid, report.boot_id)
    assert (lease.mac, lease.ip) == (port["mac_address"], fixed["ip_address"])
    page = net.fetch(fixed["ip_address"])
    assert (page.marker, page.boots, page.boot_id) == (marker, boots, report.boot_id)
    assert port["binding:host_id"] == host
    tap = vm.tap_of(sid)
    other = "vm2" if host == "vm1" else "vm1"
    assert tap in vm.taps(host) and tap not in vm.taps(other)
    return str(fixed["ip_address"])


def test_a_server_answers_at_its_fixed_ip_across_resize_revert_and_confirm(
    vm: VmStack, testnet: ProbeNet
) -> None:
    sid = vm.boot(f"p-{uuid.uuid4().hex[:8]}", "vm1", networks=[{"uuid": testnet.network_id}])
    vm.wait_status(sid, "ACTIVE")
    (first,) = vm.wait_reports("vm1", sid, 1)
    marker, mac = first.marker, _port(vm, sid)["mac_address"]
    address = _answers(vm, testnet, sid, "vm1", boots=1, marker=marker)
    assert ipaddress.ip_address(address) in ipaddress.ip_network(testnet.cidr)
    # The network's name (the namespace's) keys the server's addresses.
    addresses = vm.show(sid)["addresses"]
    assert [a["addr"] for a in addresses[testnet.netns]] == [address]

    # The guest runs on vm2 while the resize waits to be confirmed.
    vm.action(sid, {"resize": {"flavorRef": BIG["id"]}})
    vm.wait_status(sid, "VERIFY_RESIZE")
    vm.wait_reports("vm2", sid, 1)
    assert _answers(vm, testnet, sid, "vm2", boots=2, marker=marker) == address

    # Reverted: back on vm1 from the source's own disk, which was booted once
    # before the resize (the dest's copy, booted twice, is gone); the same address.
    vm.action(sid, {"revertResize": None})
    vm.wait_status(sid, "ACTIVE")
    vm.wait_reports("vm1", sid, 2)
    assert _answers(vm, testnet, sid, "vm1", boots=2, marker=marker) == address

    # Resized again and confirmed: on vm2 for good; nothing of it is left on vm1.
    vm.action(sid, {"resize": {"flavorRef": BIG["id"]}})
    vm.wait_status(sid, "VERIFY_RESIZE")
    vm.action(sid, {"confirmResize": None})
    vm.wait_status(sid, "ACTIVE")
    vm.wait_reports("vm2", sid, 1)
    assert _answers(vm, testnet, sid, "vm2", boots=3, marker=marker) == address
    assert _port(vm, sid)["mac_address"] == mac
    assert vm.show(sid)["flavor"]["id"] != SMALL["id"]

    tap = vm.tap_of(sid)
    vm.delete(sid)
    vm.wait_gone(sid)
    assert tap not in vm.taps("vm2")
    with _net_api(vm) as api:  # the port made for the boot goes with the server
        assert api.get("/ports", params={"device_id": sid}).json()["ports"] == []
