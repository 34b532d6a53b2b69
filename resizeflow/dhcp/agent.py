"""The DHCP agent: a reconcile loop that makes this host serve every network's DHCP.

Like Neutron's DHCP agent, it serves each network that has a DHCP-enabled
subnet from a namespace of its own (``rfdhcp-<host>-<network id[:8]>``),
through a port of its own on the network (device owner ``network:dhcp``,
device id ``dhcp-<host>-<network id>``), whose MAC and address are on a veth
end in the namespace; the other end is on this host's bridge of the network,
joined to the compute hosts by VXLAN like theirs
(:mod:`resizeflow.virt.vifs`), with this host's own tunnel endpoint.

Every ``RESIZEFLOW_DHCP_SYNC_INTERVAL`` seconds, and first of all at start,
:meth:`DhcpAgent.sync` reads the database and makes the host match it:

- a network newly served: its DHCP port made, its namespace, veth, bridge,
  VXLAN device and dnsmasq set up, the port ACTIVE once dnsmasq runs;
- a network no longer served (deleted, or DHCP turned off): its dnsmasq
  stopped, its namespace (and so its veth) removed, its bridge and VXLAN
  device removed, its DHCP port deleted if the network still has it;
- a port added or removed: the hosts file rewritten, dnsmasq reloaded;
- a dnsmasq that died: started again; one a killed predecessor left running
  with the same arguments: kept;
- the flood lists refreshed to the current tunnel endpoints, and this host's
  endpoint recorded again (its ``updated_at`` shows the agent alive).

SIGTERM stops every dnsmasq and removes the namespaces, veths, bridges and
VXLAN devices; the DHCP ports stay (DOWN), for the next start to reuse.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import shutil
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from resizeflow.conf import Settings
from resizeflow.db.models import Network, Port, PortBinding, Subnet
from resizeflow.db.session import Database
from resizeflow.dhcp import dnsmasq, netns
from resizeflow.openstack.base import TunnelPeer
from resizeflow.openstack.network import SqlNetwork
from resizeflow.openstack.tunnels import record_endpoint, tunnel_peers
from resizeflow.virt import vifs

log = logging.getLogger(__name__)

DHCP_OWNER = "network:dhcp"
# In a network's directory: its VNI and this agent's port on it, for the teardown.
RECORD = "network.json"


@dataclass(frozen=True)
class Served:
    """One network as this agent serves it: its subnet, its own DHCP port, the
    other ports' (MAC, IP)."""

    network_id: str
    vni: int
    mtu: int
    cidr: str
    gateway: str | None
    port_id: str
    mac: str
    ip: str
    hosts: tuple[tuple[str, str], ...]


def namespace_prefix(host: str) -> str:
    return f"rfdhcp-{host}-"


def namespace(host: str, network_id: str) -> str:
    """The namespace of ``network_id`` on agent ``host``."""
    return namespace_prefix(host) + network_id[:8]


def device_id(host: str, network_id: str) -> str:
    """The device id of agent ``host``'s DHCP port on ``network_id``."""
    return f"dhcp-{host}-{network_id}"


def veth_names(port_id: str) -> tuple[str, str]:
    """The veth ends of a DHCP port: (in the namespace, on the bridge), as Neutron's."""
    return "ns-" + port_id[:11], "tap" + port_id[:11]


class DhcpAgent:
    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self.host = settings.dhcp_host
        settings.check_device_names(self.host)
        self.net = vifs.HostNetworking.of(settings, self.host)
        # A directory per network set up here: dnsmasq's files, and RECORD.
        self.state_dir = settings.dhcp_dir()

    # -- the database ----------------------------------------------------------
    def _dhcp_port(self, s: Session, net: Network) -> Port | None:
        """This agent's DHCP port on ``net``: found (a predecessor's), or made."""
        dev = device_id(self.host, net.id)
        port = s.scalars(
            select(Port).where(Port.network_id == net.id, Port.device_id == dev).limit(1)
        ).first()
        if port is None:
            port = SqlNetwork(s).create_port(
                net.id,
                project_id=net.project_id,
                device_id=dev,
                device_owner=DHCP_OWNER,
                name=f"dhcp-{self.host}",
            )
        if port.binding_host_id != self.host:
            port.binding_host_id = self.host
        return port if port.ip_address else None

    def _read(self) -> tuple[list[Served], tuple[TunnelPeer, ...]]:
        """Record this host's endpoint; what to serve, with the DHCP ports made."""
        served: list[Served] = []
        with self.db.transaction() as s:
            record_endpoint(s, self.host, self.net.local_ip, self.net.port)
            peers = tunnel_peers(s)
            dhcp_nets = select(Subnet.network_id).where(Subnet.enable_dhcp.is_(True))
            nets = s.scalars(select(Network).where(Network.id.in_(dhcp_nets)).order_by(Network.id))
            for net in nets:
                port = self._dhcp_port(s, net)
                subnet = s.get(Subnet, port.subnet_id) if port and port.subnet_id else None
                if port is None or subnet is None or not subnet.enable_dhcp:
                    continue
                others = s.execute(
                    select(Port.mac_address, Port.ip_address).where(
                        Port.network_id == net.id,
                        Port.ip_address.is_not(None),
                        Port.id != port.id,
                    )
                )
                served.append(
                    Served(
                        network_id=net.id,
                        vni=net.segmentation_id,
                        mtu=net.mtu,
                        cidr=subnet.cidr,
                        gateway=subnet.gateway_ip,
                        port_id=port.id,
                        mac=port.mac_address,
                        ip=str(port.ip_address),
                        hosts=tuple((mac, str(ip)) for mac, ip in others),
                    )
                )
        return served, peers

    def _report(self, active: set[str], served: set[str] | None) -> None:
        """This agent's ports: ACTIVE where dnsmasq serves, else DOWN; deleted where
        their network is no longer served (``served``: the networks served now;
        None, at a stop, deletes none)."""
        with self.db.transaction() as s:
            mine = [
                p
                for p in s.scalars(select(Port).where(Port.device_owner == DHCP_OWNER))
                if p.device_id == device_id(self.host, p.network_id)
            ]
            stale = [p.id for p in mine if served is not None and p.network_id not in served]
            for port in mine:
                status = "ACTIVE" if port.id in active else "DOWN"
                if port.id not in stale and port.status != status:
                    port.status = status
            if stale:
                s.execute(delete(PortBinding).where(PortBinding.port_id.in_(stale)))
                s.execute(delete(Port).where(Port.id.in_(stale)))

    # -- the host ----------------------------------------------------------------
    def _config(self, network_id: str, served: Served | None = None) -> dnsmasq.DhcpConfig:
        return dnsmasq.DhcpConfig(
            interface=veth_names(served.port_id)[0] if served else "",
            cidr=served.cidr if served else "0.0.0.0/0",
            gateway=served.gateway if served else None,
            mtu=served.mtu if served else 0,
            directory=self.state_dir / network_id,
        )

    def _serve(self, net: Served, peers: tuple[TunnelPeer, ...]) -> None:
        ns = namespace(self.host, net.network_id)
        cfg = self._config(net.network_id, net)
        cfg.directory.mkdir(parents=True, exist_ok=True)
        # What a later teardown needs, though the network's rows may be gone by then.
        record = cfg.directory / RECORD
        write_json(record, {"vni": net.vni, "port_id": net.port_id})
        bridge = self.net.plug_network(net.vni, peers)
        netns.ensure(ns)
        inside, outside = veth_names(net.port_id)
        prefix = ipaddress.IPv4Network(net.cidr, strict=False).prefixlen
        netns.plug_veth(
            ns,
            inside=inside,
            outside=outside,
            mac=net.mac,
            address=f"{net.ip}/{prefix}",
            bridge=bridge,
            mtu=net.mtu,
        )
        changed = dnsmasq.write_hosts(cfg.hosts_file, dnsmasq.hosts_text(net.hosts))
        pid = dnsmasq.running_as(cfg)
        if pid is None:
            # Dead, never started, or started with other arguments (a new gateway).
            dnsmasq.stop(cfg)
            pid = dnsmasq.start(cfg, ns)
            log.info("network %s: dnsmasq %d serves %s in %s", net.network_id, pid, net.cidr, ns)
        elif changed:
            dnsmasq.reload(pid)
            log.info("network %s: hosts changed; dnsmasq %d reloaded", net.network_id, pid)

    def _unserve(self, network_id: str) -> None:
        """Stop a network's dnsmasq, remove its veth and namespace, its bridge and
        VXLAN device (if nothing else uses them), and its files."""
        cfg = self._config(network_id)
        record = read_json(cfg.directory / RECORD)
        dnsmasq.stop(cfg)
        if record:
            outside = veth_names(str(record["port_id"]))[1]
            if vifs.exists(outside):
                netns.del_link(outside)  # the pair goes at once, not with the namespace
        netns.delete(namespace(self.host, network_id))
        if record:
            self._remove_bridge(int(record["vni"]), str(record["port_id"]))
        shutil.rmtree(cfg.directory, ignore_errors=True)
        log.info("network %s: no longer served here", network_id)

    def _remove_bridge(self, vni: int, port_id: str) -> None:
        bridge, vxlan = self.net.bridge(vni), self.net.vxlan(vni)
        # Only a bridge nothing else uses: a compute host's taps on this machine stay.
        if set(vifs.taps_on(bridge)) <= {vxlan, veth_names(port_id)[1]}:
            vifs.remove_network(bridge, vxlan)

    def _set_up(self) -> list[str]:
        """The networks this host has set up: their directories in the state dir."""
        if not self.state_dir.is_dir():
            return []
        return sorted(d.name for d in self.state_dir.iterdir() if d.is_dir())

    def sync(self) -> None:
        """Make this host serve what the database says: see the module's doc."""
        served, peers = self._read()
        active: set[str] = set()
        for net in served:
            try:
                self._serve(net, peers)
                active.add(net.port_id)
            except Exception:
                log.exception("network %s: DHCP not served", net.network_id)
        served_ids = {n.network_id for n in served}
        for network_id in self._set_up():
            if network_id not in served_ids:
                self._unserve(network_id)
        # A namespace without a directory: what a predecessor left half made.
        wanted = {namespace(self.host, n) for n in served_ids}
        for ns in netns.names(namespace_prefix(self.host)):
            if ns not in wanted:
                netns.delete(ns)
        self._report(active, served_ids)

    def stop(self) -> None:
        """Take down everything this agent runs on the host; its ports stay, DOWN."""
        for network_id in self._set_up():
            self._unserve(network_id)
        for ns in netns.names(namespace_prefix(self.host)):
            netns.delete(ns)
        try:
            self._report(set(), None)
        except Exception:
            log.exception("could not mark this agent's DHCP ports DOWN")


def remove_agent_leftovers(settings: Settings) -> None:
    """What a killed agent of ``settings.dhcp_host`` left on this machine: its
    dnsmasq processes, namespaces, veths, bridges and VXLAN devices (a dev
    stack's cleanup; a stopped agent leaves none)."""
    host = settings.dhcp_host
    agent_dir = settings.dhcp_dir()
    if agent_dir.is_dir():
        for network_dir in agent_dir.iterdir():
            record = read_json(network_dir / RECORD)
            if not record:
                continue
            dnsmasq.stop(dnsmasq.DhcpConfig("", "0.0.0.0/0", None, 0, network_dir))
            outside = veth_names(str(record["port_id"]))[1]
            vifs.remove_devices([outside])
            vni = int(record["vni"])
            names = vifs.HostNetworking.of(settings, host, plugs=False)
            vifs.remove_devices([names.vxlan(vni), names.bridge(vni)])
    for ns in netns.names(namespace_prefix(host)):
        netns.delete(ns)


def write_json(path: Path, value: dict[str, Any]) -> None:
    text = json.dumps(value, sort_keys=True)
    if not path.exists() or path.read_text() != text:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def run(settings: Settings) -> None:
    """Serve DHCP for every network until SIGTERM (or SIGINT); exit 0 on a clean stop."""
    db = Database(settings.db_url)
    agent = DhcpAgent(settings, db)
    stopping = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info(
        "DHCP agent %s: tunnel endpoint %s:%d, state in %s",
        agent.host,
        agent.net.local_ip,
        agent.net.port,
        agent.state_dir,
    )
    try:
        while not stopping.is_set():
            try:
                agent.sync()
            except Exception:
                # The database or a tool failing once must not end the agent.
                log.exception("DHCP agent %s: sync failed; trying again", agent.host)
            stopping.wait(settings.dhcp_sync_interval)
    finally:
        agent.stop()
        db.dispose()
    raise SystemExit(0)
