"""Neutron's side of networks: the records the Networking API reads and changes.

The Networking API (:mod:`resizeflow.api.network`) calls this service; Nova's
side (:class:`~resizeflow.openstack.network.SqlNetwork`) allocates and frees a
server's ports on the same rows. Neither the data plane (bridges, VXLAN, DHCP)
nor a host is reached from here.

Who sees what is Neutron's default policy: a project sees its own networks and
the shared ones, and its own subnets and ports; an admin sees everything.
``project_id`` arguments carry that scope (None for an admin); what a project
may not see is not found, as Neutron answers.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, delete, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from resizeflow import errors
from resizeflow.db.models import Network, Port, PortBinding, Subnet
from resizeflow.db.session import Database
from resizeflow.openstack import network as ipam
from resizeflow.openstack.neutron_errors import (
    InvalidInput,
    InvalidIpForNetwork,
    InvalidIpForSubnet,
    IpAddressAlreadyAllocated,
    IpAddressGenerationFailure,
    MacAddressInUse,
    NetworkInUse,
    NetworkNotFound,
    PolicyNotAuthorized,
    PortBoundToServer,
    PortNotFound,
    SubnetInUse,
    SubnetNotFound,
)

DHCP_OWNER = "network:dhcp"
# A query's filters: a column name and the values any of which matches.
Filters = Mapping[str, Sequence[Any]]
NETWORK_FILTERS = ("id", "name", "shared", "project_id", "status", "admin_state_up")
SUBNET_FILTERS = ("id", "name", "network_id", "cidr", "project_id", "ip_version", "enable_dhcp")
PORT_FILTERS = (
    "id", "name", "network_id", "device_id", "device_owner", "mac_address", "project_id",
    "status", "binding_host_id", "ip_address", "subnet_id",
)  # fmt: skip


@dataclass(frozen=True)
class NetworkInfo:
    id: str
    project_id: str
    name: str
    description: str
    status: str
    admin_state_up: bool
    shared: bool
    mtu: int
    segmentation_id: int
    subnets: tuple[str, ...]
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True)
class SubnetInfo:
    id: str
    network_id: str
    project_id: str
    name: str
    description: str
    ip_version: int
    cidr: str
    gateway_ip: str | None
    enable_dhcp: bool
    created_at: dt.datetime
    updated_at: dt.datetime

    @property
    def allocation_pools(self) -> tuple[tuple[str, str], ...]:
        return allocation_pools(self.cidr, self.gateway_ip)


@dataclass(frozen=True)
class PortDetail:
    id: str
    network_id: str
    subnet_id: str | None
    project_id: str
    name: str
    description: str
    mac_address: str
    ip_address: str | None
    device_id: str
    device_owner: str
    status: str
    admin_state_up: bool
    binding_host_id: str | None
    instance_uuid: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True)
class FixedIp:
    """One entry of a new port's ``fixed_ips``: a subnet, an address, or both."""

    subnet_id: str | None = None
    ip_address: str | None = None


def allocation_pools(cidr: str, gateway_ip: str | None) -> tuple[tuple[str, str], ...]:
    """The ranges a subnet's ports take addresses from: its host addresses but the gateway's."""
    net = ipaddress.IPv4Network(cidr)
    first = int(net.network_address) + (net.num_addresses > 2)
    last = int(net.broadcast_address) - (net.num_addresses > 2)
    gateway = int(ipaddress.IPv4Address(gateway_ip)) if gateway_ip else None
    ranges: list[tuple[int, int]] = []
    if gateway is not None and first <= gateway <= last:
        ranges = [(first, gateway - 1), (gateway + 1, last)]
    else:
        ranges = [(first, last)]
    return tuple(
        (str(ipaddress.IPv4Address(a)), str(ipaddress.IPv4Address(b))) for a, b in ranges if a <= b
    )


def _network_info(net: Network, subnets: Sequence[str]) -> NetworkInfo:
    return NetworkInfo(
        id=net.id,
        project_id=net.project_id,
        name=net.name,
        description=net.description,
        status=net.status,
        admin_state_up=net.admin_state_up,
        shared=net.shared,
        mtu=net.mtu,
        segmentation_id=net.segmentation_id,
        subnets=tuple(subnets),
        created_at=net.created_at,
        updated_at=net.updated_at,
    )


def _subnet_info(sub: Subnet) -> SubnetInfo:
    return SubnetInfo(
        id=sub.id,
        network_id=sub.network_id,
        project_id=sub.project_id,
        name=sub.name,
        description=sub.description,
        ip_version=sub.ip_version,
        cidr=sub.cidr,
        gateway_ip=sub.gateway_ip,
        enable_dhcp=sub.enable_dhcp,
        created_at=sub.created_at,
        updated_at=sub.updated_at,
    )


def _port_info(port: Port) -> PortDetail:
    return PortDetail(
        id=port.id,
        network_id=port.network_id,
        subnet_id=port.subnet_id,
        project_id=port.project_id,
        name=port.name,
        description=port.description,
        mac_address=port.mac_address,
        ip_address=port.ip_address,
        device_id=port.device_id,
        device_owner=port.device_owner,
        status=port.status,
        admin_state_up=port.admin_state_up,
        binding_host_id=port.binding_host_id,
        instance_uuid=port.instance_uuid,
        created_at=port.created_at,
        updated_at=port.updated_at,
    )


def _filtered(stmt: Select[Any], model: Any, filters: Filters, allowed: Sequence[str]) -> Any:
    for key in allowed:
        values = filters.get(key)
        if values:
            stmt = stmt.where(getattr(model, key).in_(list(values)))
    return stmt


def visible_networks(project_id: str | None) -> Any:
    """The condition on networks that ``project_id`` sees: its own and the shared ones."""
    if project_id is None:
        return True
    return or_(Network.project_id == project_id, Network.shared.is_(True))


def visible_network(s: Session, network_id: str, project_id: str | None) -> Network:
    net = s.get(Network, network_id)
    if net is None or not (project_id is None or net.shared or net.project_id == project_id):
        raise NetworkNotFound(id=network_id)
    return net


class NetworkService:
    """Networks, subnets and ports of every project, as Neutron's API server keeps them."""

    def __init__(self, db: Database, fixed_range: str = ipam.DEFAULT_FIXED_RANGE) -> None:
        self.db = db
        self.fixed_range = fixed_range

    # -- networks -----------------------------------------------------------------
    def _subnet_ids(self, s: Session, network_ids: Sequence[str]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {n: [] for n in network_ids}
        if network_ids:
            rows = s.execute(
                select(Subnet.network_id, Subnet.id)
                .where(Subnet.network_id.in_(list(network_ids)))
                .order_by(Subnet.created_at, Subnet.id)
            )
            for net_id, sub_id in rows:
                found[net_id].append(sub_id)
        return found

    def networks(self, project_id: str | None, filters: Filters) -> list[NetworkInfo]:
        # The default network is there from the first look, as devstack's "private" is.
        with self.db.transaction() as s:
            ipam.ensure_default_network(s, self.fixed_range)
        with self.db.snapshot() as s:
            stmt = select(Network).where(visible_networks(project_id))
            rows = s.scalars(
                _filtered(stmt, Network, filters, NETWORK_FILTERS).order_by(
                    Network.created_at, Network.id
                )
            ).all()
            subnets = self._subnet_ids(s, [n.id for n in rows])
            return [_network_info(n, subnets[n.id]) for n in rows]

    def network(self, project_id: str | None, network_id: str) -> NetworkInfo:
        with self.db.snapshot() as s:
            net = visible_network(s, network_id, project_id)
            return _network_info(net, self._subnet_ids(s, [net.id])[net.id])

    def create_network(
        self,
        project_id: str,
        *,
        name: str,
        description: str,
        admin_state_up: bool,
        shared: bool,
    ) -> NetworkInfo:
        with self.db.transaction() as s:
            net = ipam.create_network(
                s,
                project_id=project_id,
                name=name,
                description=description,
                shared=shared,
                admin_state_up=admin_state_up,
            )
            s.flush()
            return _network_info(net, ())

    def delete_network(self, project_id: str | None, network_id: str) -> None:
        """Delete a network with its subnets and DHCP ports; any other port keeps it (409)."""
        with self.db.transaction() as s:
            net = self._owned_network(s, network_id, project_id)
            in_use = s.scalar(
                select(func.count())
                .select_from(Port)
                .where(Port.network_id == net.id, Port.device_owner != DHCP_OWNER)
            )
            if in_use:
                raise NetworkInUse(id=network_id)
            self._delete_ports(s, select(Port.id).where(Port.network_id == net.id))
            s.execute(delete(Subnet).where(Subnet.network_id == net.id))
            s.delete(net)

    @staticmethod
    def _owned_network(s: Session, network_id: str, project_id: str | None) -> Network:
        """A network the caller may change: its own (a shared one of another project is seen,
        not changed, and is not found here either, as Neutron's policy answers)."""
        net = s.get(Network, network_id)
        if net is None or not (project_id is None or net.project_id == project_id):
            raise NetworkNotFound(id=network_id)
        return net

    @staticmethod
    def _delete_ports(s: Session, ids: Select[Any]) -> None:
        port_ids = list(s.scalars(ids))
        if port_ids:
            s.execute(delete(PortBinding).where(PortBinding.port_id.in_(port_ids)))
            s.execute(delete(Port).where(Port.id.in_(port_ids)))

    # -- subnets ------------------------------------------------------------------
    @staticmethod
    def _visible_subnets(project_id: str | None) -> Any:
        # A shared network's subnets are seen by every project, as the network is.
        if project_id is None:
            return True
        shared = select(Network.id).where(Network.shared.is_(True))
        return or_(Subnet.project_id == project_id, Subnet.network_id.in_(shared))

    def subnets(self, project_id: str | None, filters: Filters) -> list[SubnetInfo]:
        with self.db.snapshot() as s:
            stmt = select(Subnet).where(self._visible_subnets(project_id))
            stmt = _filtered(stmt, Subnet, filters, SUBNET_FILTERS)
            return [_subnet_info(r) for r in s.scalars(stmt.order_by(Subnet.created_at, Subnet.id))]

    def _subnet(self, s: Session, subnet_id: str, project_id: str | None) -> Subnet:
        sub = s.scalar(
            select(Subnet).where(Subnet.id == subnet_id, self._visible_subnets(project_id))
        )
        if sub is None:
            raise SubnetNotFound(id=subnet_id)
        return sub

    def subnet(self, project_id: str | None, subnet_id: str) -> SubnetInfo:
        with self.db.snapshot() as s:
            return _subnet_info(self._subnet(s, subnet_id, project_id))

    def create_subnet(
        self,
        project_id: str,
        scope: str | None,
        *,
        network_id: str,
        cidr: ipaddress.IPv4Network,
        gateway_ip: str | None,
        name: str,
        description: str,
        enable_dhcp: bool,
    ) -> SubnetInfo:
        """A subnet of ``network_id`` owned by ``project_id``; ``scope`` is who asks
        (None for an admin): only the network's owner adds subnets to it."""
        with self.db.transaction() as s:
            net = self._owned_network(s, network_id, scope)
            for other in s.scalars(select(Subnet.cidr).where(Subnet.network_id == net.id)):
                if ipaddress.IPv4Network(other).overlaps(cidr):
                    raise InvalidInput(
                        reason=f"Requested subnet with cidr: {cidr} for network: {net.id} "
                        "overlaps with another subnet"
                    )
            sub = ipam.create_subnet(
                s,
                network_id=net.id,
                project_id=project_id,
                cidr=str(cidr),
                gateway_ip=gateway_ip,
                name=name,
                description=description,
                enable_dhcp=enable_dhcp,
            )
            sub.gateway_ip = gateway_ip  # none is none here: a subnet without a gateway
            s.flush()
            return _subnet_info(sub)

    def delete_subnet(self, project_id: str | None, subnet_id: str) -> None:
        """Delete a subnet and its DHCP ports; a port with an address of it keeps it (409)."""
        with self.db.transaction() as s:
            sub = self._subnet(s, subnet_id, project_id)
            if project_id is not None and sub.project_id != project_id:
                raise PolicyNotAuthorized(action="delete_subnet")
            in_use = s.scalar(
                select(func.count())
                .select_from(Port)
                .where(Port.subnet_id == sub.id, Port.device_owner != DHCP_OWNER)
            )
            if in_use:
                raise SubnetInUse(id=subnet_id)
            self._delete_ports(s, select(Port.id).where(Port.subnet_id == sub.id))
            s.delete(sub)

    # -- ports --------------------------------------------------------------------
    @staticmethod
    def _visible_ports(project_id: str | None) -> Any:
        return True if project_id is None else Port.project_id == project_id

    def ports(self, project_id: str | None, filters: Filters) -> list[PortDetail]:
        with self.db.snapshot() as s:
            stmt = select(Port).where(self._visible_ports(project_id))
            stmt = _filtered(stmt, Port, filters, PORT_FILTERS)
            return [_port_info(p) for p in s.scalars(stmt.order_by(Port.created_at, Port.id))]

    def _port(self, s: Session, port_id: str, project_id: str | None) -> Port:
        port = s.get(Port, port_id)
        if port is None or not (project_id is None or port.project_id == project_id):
            raise PortNotFound(id=port_id)
        return port

    def port(self, project_id: str | None, port_id: str) -> PortDetail:
        with self.db.snapshot() as s:
            return _port_info(self._port(s, port_id, project_id))

    def create_port(
        self,
        project_id: str,
        scope: str | None,
        *,
        network_id: str,
        name: str,
        description: str,
        mac_address: str | None,
        fixed_ip: FixedIp | None,
        device_id: str,
        device_owner: str,
        admin_state_up: bool,
    ) -> PortDetail:
        """A port on a network ``scope`` sees (None: an admin), owned by ``project_id``."""
        with self.db.transaction() as s:
            net = visible_network(s, network_id, scope)
            if mac_address is not None and s.scalar(
                select(Port.id).where(Port.network_id == net.id, Port.mac_address == mac_address)
            ):
                raise MacAddressInUse(net=net.id, mac=mac_address)
            subnet = self._subnet_for(s, net.id, fixed_ip)
            address = fixed_ip.ip_address if fixed_ip is not None else None
            if address is not None:
                holder = s.scalar(
                    select(Port.id).where(Port.network_id == net.id, Port.ip_address == address)
                )
                if holder is not None or address == subnet.gateway_ip:
                    raise IpAddressAlreadyAllocated(ip=address, subnet=subnet.id)
            try:
                port = ipam.SqlNetwork(s, self.fixed_range).create_port(
                    net.id,
                    project_id=project_id,
                    subnet=subnet,
                    name=name,
                    mac_address=mac_address,
                    ip_address=address,
                    device_id=device_id,
                    device_owner=device_owner,
                )
            except IntegrityError:
                # Taken by a concurrent request since it was checked.
                raise IpAddressAlreadyAllocated(ip=address, subnet=subnet.id) from None
            except errors.FixedIpsExhausted:
                raise IpAddressGenerationFailure(net=net.id) from None
            port.description = description
            port.admin_state_up = admin_state_up
            s.flush()
            return _port_info(port)

    @staticmethod
    def _subnet_for(s: Session, network_id: str, fixed_ip: FixedIp | None) -> Subnet:
        """The subnet a new port's address comes from: the one asked for, the one holding
        the address asked for, or the network's first."""
        subnets = s.scalars(
            select(Subnet)
            .where(Subnet.network_id == network_id)
            .order_by(Subnet.created_at, Subnet.id)
        ).all()
        if fixed_ip is not None and fixed_ip.subnet_id is not None:
            chosen = next((sub for sub in subnets if sub.id == fixed_ip.subnet_id), None)
            if chosen is None:
                raise InvalidInput(
                    reason=f"Failed to create port on network {network_id}, because "
                    f"fixed_ips included invalid subnet {fixed_ip.subnet_id}"
                )
            if fixed_ip.ip_address is not None and not ipam.in_subnet(fixed_ip.ip_address, chosen):
                raise InvalidIpForSubnet(ip=fixed_ip.ip_address)
            return chosen
        if fixed_ip is not None and fixed_ip.ip_address is not None:
            for sub in subnets:
                if ipam.in_subnet(fixed_ip.ip_address, sub):
                    return sub
            raise InvalidIpForNetwork(ip=fixed_ip.ip_address)
        if not subnets:
            raise IpAddressGenerationFailure(net=network_id)
        return subnets[0]

    def delete_port(self, project_id: str | None, port_id: str) -> None:
        """Delete a port; a server's NIC is refused (409): no interface detach here."""
        with self.db.transaction() as s:
            port = self._port(s, port_id, project_id)
            if port.instance_uuid is not None and port.device_owner.startswith("compute:"):
                raise PortBoundToServer(id=port_id, server=port.instance_uuid)
            s.execute(delete(PortBinding).where(PortBinding.port_id == port.id))
            s.delete(port)
