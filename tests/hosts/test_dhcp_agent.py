"""The DHCP agent for real: ``resizeflow network`` serving a network over VXLAN.

A stack's database (PostgreSQL) holds a network, its subnet and a port. The
agent runs as its own process, with its own tunnel endpoint (127.0.0.1 and
a UDP port of its own). A "compute host" is this test's, made with the same
code the workers plug networks with (:class:`resizeflow.virt.vifs.HostNetworking`):
a bridge and a VXLAN device on 127.0.0.31 with a port of its own, flooding to
the agent's endpoint. A client namespace whose NIC is on that bridge, with a
port's MAC, asks busybox's udhcpc for a lease: every answer crosses the VXLAN.
The subnet is a documentation range (198.51.100.0/24), only ever inside the
namespaces.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from resizeflow.db.models import Port
from resizeflow.devstack.stack import LocalStack, build, free_udp_port
from resizeflow.dhcp import netns
from resizeflow.dhcp.agent import DHCP_OWNER, namespace_prefix
from resizeflow.openstack.network import SqlNetwork, create_network, create_subnet
from resizeflow.openstack.tunnels import record_endpoint, tunnel_peers
from resizeflow.virt import vifs
from tests.support.network import Client, require_tools
from tests.support.stack import PG_ADMIN_URL, REDIS_URL, require, wait_for

COMPUTE_IP = "127.0.0.31"  # apart from the sshd test hosts' addresses
CIDR = "198.51.100.0/24"
SYNC = "0.5"


@dataclass
class Rig:
    stack: LocalStack
    run: str
    network_id: str
    vni: int
    compute: vifs.HostNetworking
    client: Client
    agent_env: dict[str, str]

    @property
    def agent_host(self) -> str:
        return self.stack.settings.dhcp_host

    def new_port(self) -> tuple[str, str, str]:
        """A port on the network: (id, MAC, IP)."""
        with self.stack.db.transaction() as s:
            port = SqlNetwork(s).create_port(self.network_id, project_id="p", name="guest")
            return port.id, port.mac_address, str(port.ip_address)

    def delete_port(self, port_id: str) -> None:
        with self.stack.db.transaction() as s:
            s.delete(s.get(Port, port_id))

    def plug_compute(self) -> None:
        """What a compute host does as it plugs a guest's port: the network's
        bridge, VXLAN device and flood list, from the recorded endpoints."""
        with self.stack.db.transaction() as s:
            record_endpoint(s, self.compute.host, self.compute.local_ip, self.compute.port)
            peers = tunnel_peers(s)
        self.compute.plug_network(self.vni, peers)

    def dhcp_port(self) -> Port | None:
        with self.stack.db.snapshot() as s:
            return s.scalars(
                select(Port).where(
                    Port.network_id == self.network_id, Port.device_owner == DHCP_OWNER
                )
            ).first()

    def hosts_file(self) -> str:
        path = self.stack.settings.dhcp_dir() / self.network_id / "hosts"
        return path.read_text() if path.exists() else ""

    def namespaces(self) -> list[str]:
        return netns.names(namespace_prefix(self.agent_host))

    def dnsmasqs(self) -> list[int]:
        """The dnsmasq processes serving from this agent's state dir."""
        mark = str(self.stack.settings.dhcp_dir())
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmd = (proc / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if cmd.startswith("dnsmasq\0") and mark in cmd:
                found.append(int(proc.name))
        return found


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    require_tools()
    require(REDIS_URL, 6379, "Redis")
    require(PG_ADMIN_URL, 5432, "PostgreSQL")
    run = uuid.uuid4().hex[:5]
    state_dir = tmp_path / "state"
    stack = build(
        state_dir,
        broker=REDIS_URL,
        broker_prefix=f"rf-net-{run}:",
        pg_admin_url=PG_ADMIN_URL,
        base_env=os.environ,
        log_dir=state_dir,
        env={
            "RESIZEFLOW_DHCP_HOST": f"net{run}",
            "RESIZEFLOW_BRIDGE": f"rd{run}{{vni}}",
            "RESIZEFLOW_VXLAN_DEVICE": f"rv{run}{{vni}}",
            "RESIZEFLOW_DHCP_SYNC_INTERVAL": SYNC,
            "RESIZEFLOW_LOG_FORMAT": "text",
        },
    )
    compute = vifs.HostNetworking(
        host=f"cmp{run}",
        bridge_template=f"rc{run}{{vni}}",
        vxlan_template=f"rx{run}{{vni}}",
        local_ip=COMPUTE_IP,
        port=free_udp_port(COMPUTE_IP),
    )
    client: Client | None = None
    try:
        with stack.db.transaction() as s:
            net = create_network(s, project_id="p", name=f"net-{run}")
            s.flush()
            create_subnet(s, network_id=net.id, project_id="p", cidr=CIDR)
            network_id, vni = net.id, net.segmentation_id
        client = Client(f"rfcl{run}", compute.plug_network(vni, ()), tmp_path)
        yield Rig(stack, run, network_id, vni, compute, client, stack.network_env())
    finally:
        stack.close()
        if client is not None:
            client.remove()
        vifs.remove_devices(vifs.own_devices(compute.vxlan_template, compute.host))
        vifs.remove_devices(vifs.own_devices(compute.bridge_template, compute.host))


def test_the_agent_serves_each_port_its_address_over_vxlan(rig: Rig) -> None:
    first_id, first_mac, first_ip = rig.new_port()
    rig.stack.start_network(rig.agent_env)
    dhcp = rig.dhcp_port()
    assert dhcp is not None and dhcp.status == "ACTIVE" and dhcp.binding_host_id == rig.agent_host
    # The compute host floods to the agent's endpoint, recorded as it started.
    rig.plug_compute()
    lease = rig.client.lease(first_mac)
    assert lease is not None, "no lease over the VXLAN"
    assert (lease["ip"], lease["router"], lease["mask"]) == (
        first_ip,
        "198.51.100.1",
        "255.255.255.0",
    )
    assert lease["mtu"] == "1450"
    # A MAC of no port gets nothing: the range is static.
    assert rig.client.lease("fa:16:3e:ab:cd:ef") is None

    # A port added while the agent runs gets its lease; a deleted one loses it.
    _, second_mac, second_ip = rig.new_port()
    wait_for(lambda: second_mac in rig.hosts_file(), 30, "the new port in the hosts file")
    lease = rig.client.lease(second_mac)
    assert lease is not None and lease["ip"] == second_ip
    rig.delete_port(first_id)
    wait_for(lambda: first_mac not in rig.hosts_file(), 30, "the deleted port to leave it")
    assert rig.client.lease(first_mac) is None

    # Killed, the agent leaves its dnsmasq running; started again, it keeps it.
    (before,) = rig.dnsmasqs()
    rig.stack.sup.kill("network")
    rig.stack.start_network(rig.agent_env)
    assert rig.dnsmasqs() == [before]
    assert len(rig.namespaces()) == 1
    lease = rig.client.lease(second_mac)
    assert lease is not None and lease["ip"] == second_ip

    # A dnsmasq that dies is started again within a sync or two.
    os.kill(before, signal.SIGKILL)
    wait_for(lambda: rig.dnsmasqs() not in ([], [before]), 30, "a new dnsmasq")
    lease = rig.client.lease(second_mac)
    assert lease is not None and lease["ip"] == second_ip

    # SIGTERM: dnsmasq, the namespace, the veth and the agent's bridge all go.
    assert dhcp is not None
    outside = "tap" + dhcp.id[:11]
    assert vifs.exists(outside)
    assert rig.stack.stop_network() == 0
    assert rig.dnsmasqs() == []
    assert rig.namespaces() == []
    assert not vifs.exists(outside)
    agent_bridge = rig.stack.settings.bridge_for(rig.agent_host, rig.vni)
    assert not vifs.exists(agent_bridge)
    after = rig.dhcp_port()
    assert after is not None and after.id == dhcp.id and after.status == "DOWN"
    assert rig.client.lease(second_mac) is None
