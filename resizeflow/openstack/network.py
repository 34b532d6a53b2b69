"""Networks, subnets, ports, their fixed IPs and their host bindings, in the step's transaction.

IPAM lives in the database: each port gets the lowest free address of its
network's subnet, past the network address and the gateway. A unique
constraint on (network, address) settles two boots that pick the same address
at once: the loser takes the next one.

A server booted without a network gets a port on the default network, made
on first use with a subnet on ``RESIZEFLOW_FIXED_RANGE``; its id is derived
from its name, so two first boots at once make it once.
"""

from __future__ import annotations

import functools
import ipaddress
import random
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import String, bindparam, delete, literal, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from resizeflow.db import api as dbapi
from resizeflow.db.models import Network, Port, PortBinding, Subnet
from resizeflow.errors import (
    FixedIpAlreadyInUse,
    FixedIpNotInNetwork,
    FixedIpsExhausted,
    NetworkNotFound,
    NoSubnet,
    PortInUse,
    PortNotFound,
    PortNotUsable,
    VniExhausted,
)
from resizeflow.openstack.base import PortRequest, VifSpec

DEFAULT_FIXED_RANGE = "10.0.0.0/24"
DEFAULT_NETWORK = "private"
# VXLAN ids: 24 bits; the first thousand are left to other uses, as Neutron's
# deployments often do.
VNI_RANGE = (1001, 2**24 - 1)
_ALLOCATION_ATTEMPTS = 20
COMPUTE_OWNER = "compute:nova"


@functools.cache
def _bind_statement(dialect: str) -> Any:
    """Bind every port of ``b_instance`` on ``b_host`` that is not bound there yet.

    One statement, without reading the bindings first: the unique (port,
    host) constraint skips those that exist, so a repeated step adds none.
    """
    upsert = pg_insert if dialect == "postgresql" else sqlite_insert
    ports = select(Port.id, bindparam("b_host", type_=String()), literal("ACTIVE", String())).where(
        Port.instance_uuid == bindparam("b_instance")
    )
    table = PortBinding.metadata.tables[PortBinding.__tablename__]
    return (
        upsert(table)
        .from_select([table.c.port_id, table.c.host, table.c.status], ports)
        .on_conflict_do_nothing(index_elements=[table.c.port_id, table.c.host])
    )


def _mac() -> str:
    # Locally administered unicast prefix, as Neutron's default base_mac.
    return "fa:16:3e:" + ":".join(f"{random.randint(0, 255):02x}" for _ in range(3))


@functools.cache
def _teardown_statement() -> Any:
    # Built once: both flows' first step runs it.
    ports = select(Port.id).where(Port.instance_uuid == bindparam("b_instance"))
    return (
        delete(PortBinding)
        .where(PortBinding.host == bindparam("b_host"), PortBinding.port_id.in_(ports))
        .execution_options(synchronize_session=False)
    )


@dataclass(frozen=True)
class PortRow:
    """What a step reads of a port: none of it changes while the port lives."""

    id: str
    network_id: str
    mac_address: str
    ip_address: str | None
    vni: int
    network_name: str


def _by_id(port: PortRow) -> str:
    return port.id


def _as_int(address: str) -> int:
    # NOTE: every used address of the network is parsed on each boot, and
    # inet_aton is several times faster than ipaddress for the dotted quads
    # stored here.
    return int.from_bytes(socket.inet_aton(address), "big")


def _of_network(column: Any) -> Any:
    """``column`` of the port's network, as a column of a statement on ports."""
    return select(column).where(Network.id == Port.network_id).scalar_subquery()


def in_subnet(address: str, subnet: Subnet) -> bool:
    """Whether ``address`` is one a port of ``subnet`` may have (not its network or broadcast)."""
    cidr = ipaddress.IPv4Network(subnet.cidr)
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        return False
    if ip not in cidr:
        return False
    return cidr.num_addresses <= 2 or ip not in (cidr.network_address, cidr.broadcast_address)


def default_network_id(name: str = DEFAULT_NETWORK) -> str:
    """The default network's id: the same on every API process, derived from its name."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"resizeflow:network:{name}"))


def _free_vni(session: Session, skip: set[int]) -> int:
    used = set(session.scalars(select(Network.segmentation_id))) | skip
    for vni in range(VNI_RANGE[0], VNI_RANGE[1] + 1):
        if vni not in used:
            return vni
    raise VniExhausted()


def create_network(
    session: Session,
    *,
    project_id: str,
    name: str = "",
    network_id: str | None = None,
    shared: bool = False,
    admin_state_up: bool = True,
    description: str = "",
) -> Network:
    """A network with the lowest free VNI; a concurrent create of the same VNI
    makes this one take the next (a savepoint, the caller's transaction stays)."""
    tried: set[int] = set()
    for _ in range(_ALLOCATION_ATTEMPTS):
        net = Network(
            id=network_id or str(uuid.uuid4()),
            project_id=project_id,
            name=name,
            description=description,
            shared=shared,
            admin_state_up=admin_state_up,
            segmentation_id=_free_vni(session, tried),
        )
        try:
            with session.begin_nested():
                session.add(net)
        except IntegrityError:
            if network_id is not None and session.get(Network, network_id) is not None:
                raise
            tried.add(net.segmentation_id)
            continue
        return net
    raise VniExhausted()


def create_subnet(
    session: Session,
    *,
    network_id: str,
    project_id: str,
    cidr: str,
    gateway_ip: str | None = None,
    name: str = "",
    enable_dhcp: bool = True,
    description: str = "",
) -> Subnet:
    """An IPv4 subnet; its gateway is the first host address unless given."""
    net = ipaddress.IPv4Network(cidr, strict=False)
    if gateway_ip is None:
        gateway_ip = str(next(iter(net.hosts()), net.network_address))
    subnet = Subnet(
        id=str(uuid.uuid4()),
        network_id=network_id,
        project_id=project_id,
        name=name,
        description=description,
        cidr=str(net),
        gateway_ip=gateway_ip,
        enable_dhcp=enable_dhcp,
    )
    session.add(subnet)
    return subnet


def ensure_default_network(session: Session, fixed_range: str = DEFAULT_FIXED_RANGE) -> str:
    """The default network's id, made here (shared, with a subnet on ``fixed_range``) if new."""
    net_id = default_network_id()
    if session.get(Network, net_id) is not None:
        return net_id
    try:
        with session.begin_nested():
            create_network(
                session, project_id="", name=DEFAULT_NETWORK, network_id=net_id, shared=True
            )
            session.flush()
            create_subnet(
                session,
                network_id=net_id,
                project_id="",
                cidr=fixed_range,
                name=f"{DEFAULT_NETWORK}-subnet",
            )
    except IntegrityError:
        # Another boot made it first; it is there now.
        if session.get(Network, net_id) is None:
            raise
    return net_id


class SqlNetwork:
    """The network driver of one transaction, or of one step's transactions.

    It reads an instance's ports once and remembers them: a step asks for
    them several times (its VIFs, the bindings it sets up, each notification),
    and a port's id, network, MAC and address never change while it lives.
    Allocating or deallocating ports here forgets what was read.
    """

    def __init__(self, session: Session, fixed_range: str = DEFAULT_FIXED_RANGE) -> None:
        self.session = session
        self.fixed_range = fixed_range
        self._read: dict[str, tuple[PortRow, ...]] = {}

    def ports(self, instance_uuid: str) -> tuple[PortRow, ...]:
        """The instance's ports, by id."""
        found = self._read.get(instance_uuid)
        if found is None:
            # Reading the ports must not flush the step's pending changes early.
            with self.session.no_autoflush:
                rows = self.session.execute(
                    select(
                        Port.id,
                        Port.network_id,
                        Port.mac_address,
                        Port.ip_address,
                        _of_network(Network.segmentation_id),
                        _of_network(Network.name),
                    )
                    .where(Port.instance_uuid == instance_uuid)
                    .order_by(Port.id)
                ).all()
            found = self._read[instance_uuid] = tuple(PortRow(*row) for row in rows)
        return found

    @staticmethod
    def ports_column(dialect: str, instance_uuid: Any) -> Any:
        """A column that reads the ports of ``instance_uuid`` (a column of the
        statement) in another statement's round trip; see :meth:`remember`."""
        return dbapi.json_rows(
            dialect,
            Port.instance_uuid == instance_uuid,
            Port.id,
            Port.network_id,
            Port.mac_address,
            Port.ip_address,
            _of_network(Network.segmentation_id),
            _of_network(Network.name),
        )

    def remember(self, instance_uuid: str, read: list[list[Any]] | None) -> None:
        """Take the ports read by :meth:`ports_column` as read here."""
        self._read[instance_uuid] = tuple(sorted((PortRow(*r) for r in read or ()), key=_by_id))

    def _ports(self, instance_uuid: str) -> list[str]:
        return [p.id for p in self.ports(instance_uuid)]

    def check_requests(
        self,
        instance_uuid: str,
        project_id: str,
        scope: str | None,
        requests: Sequence[PortRequest],
    ) -> None:
        """Refuse a boot's NICs before anything is made, as Nova's validate_networks does:
        each port must be seen (``scope``: the caller's project, None for an admin), be the
        server's project's and be free; each address free; each network seen, with a subnet.
        """
        networks: list[PortRequest] = []
        for req in requests:
            if req.port_id is not None:
                port = self.session.get(Port, req.port_id)
                if port is None or (scope is not None and port.project_id != scope):
                    raise PortNotFound(port=req.port_id)
                if port.device_id or port.instance_uuid is not None:
                    raise PortInUse(port=req.port_id)
                if port.project_id != project_id:
                    raise PortNotUsable(port=req.port_id, instance=instance_uuid)
            elif req.network_id is not None:
                networks.append(req)
                if req.address is not None:
                    holder = self.session.scalar(
                        select(Port.device_id).where(
                            Port.network_id == req.network_id, Port.ip_address == req.address
                        )
                    )
                    if holder is not None:
                        raise FixedIpAlreadyInUse(address=req.address, instance=holder)
        for req in networks:
            net = self.session.get(Network, req.network_id)
            if net is None or not (scope is None or net.shared or net.project_id == scope):
                raise NetworkNotFound(network=req.network_id)
        for req in networks:
            assert req.network_id is not None
            self.subnet_of(req.network_id, req.address)

    def allocate_for_instance(
        self, instance_uuid: str, project_id: str, requests: Sequence[PortRequest]
    ) -> None:
        """A port per request: a new one on its network (the default network if
        the request names none), or the user's own port, claimed for this
        server (it must be free)."""
        self._read.pop(instance_uuid, None)
        for req in requests:
            if req.port_id is not None:
                self._claim_port(instance_uuid, req.port_id)
                continue
            network_id = req.network_id or ensure_default_network(self.session, self.fixed_range)
            self.create_port(
                network_id,
                project_id=project_id,
                ip_address=req.address,
                instance_uuid=instance_uuid,
                device_id=instance_uuid,
                device_owner=COMPUTE_OWNER,
            )

    def _claim_port(self, instance_uuid: str, port_id: str) -> None:
        port = self.session.get(Port, port_id, with_for_update=True)
        if port is None:
            raise PortNotFound(port=port_id)
        if port.instance_uuid is not None or port.device_id:
            raise PortInUse(port=port_id)
        port.instance_uuid = port.device_id = instance_uuid
        port.device_owner = COMPUTE_OWNER
        port.preserve_on_delete = True

    def subnet_of(self, network_id: str, address: str | None = None) -> Subnet:
        """The subnet a new port of ``network_id`` takes its address from: the
        network's first, or the one ``address`` is in."""
        if self.session.get(Network, network_id) is None:
            raise NetworkNotFound(network=network_id)
        subnets = self.session.scalars(
            select(Subnet)
            .where(Subnet.network_id == network_id)
            .order_by(Subnet.created_at, Subnet.id)
        ).all()
        if not subnets:
            raise NoSubnet(network=network_id)
        if address is None:
            return subnets[0]
        for subnet in subnets:
            if in_subnet(address, subnet):
                return subnet
        raise FixedIpNotInNetwork(address=address, network=network_id)

    def _free_address(self, network_id: str, subnet: Subnet, skip: set[str]) -> str:
        cidr = ipaddress.IPv4Network(subnet.cidr)
        addresses = self.session.scalars(
            select(Port.ip_address).where(
                Port.network_id == network_id, Port.ip_address.is_not(None)
            )
        )
        used = {_as_int(address) for address in addresses if address is not None}
        used.update(_as_int(address) for address in skip)
        if subnet.gateway_ip:
            used.add(_as_int(subnet.gateway_ip))
        first = int(cidr.network_address) + (cidr.num_addresses > 2)
        # The host addresses run up to the broadcast address, which a /31 does
        # not have; integers, as an address object per candidate would cost
        # more than the lookup.
        last = int(cidr.broadcast_address) - (cidr.num_addresses > 2)
        for candidate in range(first, last + 1):
            if candidate not in used:
                return str(ipaddress.IPv4Address(candidate))
        raise FixedIpsExhausted(network=network_id, cidr=str(cidr))

    def create_port(
        self,
        network_id: str,
        *,
        project_id: str,
        instance_uuid: str | None = None,
        device_id: str = "",
        device_owner: str = "",
        name: str = "",
        mac_address: str | None = None,
        ip_address: str | None = None,
        subnet: Subnet | None = None,
    ) -> Port:
        """A port with the lowest free address of ``subnet`` (by default the
        network's first, or the one ``ip_address`` is in), or ``ip_address``."""
        subnet = subnet or self.subnet_of(network_id, ip_address)
        tried: set[str] = set()
        for _ in range(_ALLOCATION_ATTEMPTS):
            address = ip_address or self._free_address(network_id, subnet, tried)
            port = Port(
                id=str(uuid.uuid4()),
                instance_uuid=instance_uuid,
                network_id=network_id,
                subnet_id=subnet.id,
                project_id=project_id,
                name=name,
                mac_address=mac_address or _mac(),
                ip_address=address,
                device_id=device_id,
                device_owner=device_owner,
            )
            try:
                # NOTE: a savepoint, so losing the address to a concurrent boot
                # rolls back this insert alone, not the caller's transaction.
                with self.session.begin_nested():
                    self.session.add(port)
            except IntegrityError:
                if ip_address is not None:
                    raise
                tried.add(address)
                continue
            return port
        raise FixedIpsExhausted(network=network_id, cidr=subnet.cidr)

    def vifs(self, instance_uuid: str) -> tuple[VifSpec, ...]:
        """The instance's ports, as the virt driver plugs them."""
        return tuple(
            VifSpec(p.id, p.mac_address, p.ip_address, p.network_id, p.vni)
            for p in self.ports(instance_uuid)
        )

    def setup_networks_on_host(self, instance_uuid: str, host: str) -> None:
        """Set the instance's ports up on ``host`` (a binding row each), keeping the others."""
        if not self.ports(instance_uuid):
            return
        stmt = _bind_statement(self.session.get_bind().dialect.name)
        self.session.execute(stmt, {"b_host": host, "b_instance": instance_uuid})

    def migrate_instance_finish(self, instance_uuid: str, host: str) -> None:
        """Point the ports' active binding at ``host``, where the instance now runs.

        Nova calls this as a resize finishes on the dest and as a revert
        finishes on the source; it also binds a new server's ports at spawn.
        """
        if not self.ports(instance_uuid):
            return
        self.session.execute(
            update(Port)
            .where(Port.instance_uuid == instance_uuid)
            .values(binding_host_id=host, status="ACTIVE")
            .execution_options(synchronize_session=False)
        )

    def teardown_networks_on_host(self, instance_uuid: str, host: str) -> None:
        self.session.execute(_teardown_statement(), {"b_host": host, "b_instance": instance_uuid})

    def deallocate_for_instance(self, instance_uuid: str) -> None:
        """Delete the ports made for the instance; unbind and keep the user's own."""
        self._read.pop(instance_uuid, None)
        ports = self.session.scalars(select(Port).where(Port.instance_uuid == instance_uuid)).all()
        if not ports:
            return
        ids = [p.id for p in ports]
        self.session.execute(delete(PortBinding).where(PortBinding.port_id.in_(ids)))
        for port in ports:
            if port.preserve_on_delete:
                port.instance_uuid = None
                port.device_id = port.device_owner = ""
                port.binding_host_id = None
                port.preserve_on_delete = False
                port.status = "DOWN"
            else:
                self.session.delete(port)
