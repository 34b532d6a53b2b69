"""Ports, their fixed IPs and their per-host bindings, as rows in the step's transaction.

IPAM lives in the database: each port gets the lowest free address of the
configured subnet (``RESIZEFLOW_FIXED_RANGE``), past the network address and
the gateway. A unique constraint on (network, address) settles two boots that
pick the same address at once: the loser takes the next one.
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

from sqlalchemy import String, bindparam, delete, literal, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from resizeflow.db import api as dbapi
from resizeflow.db.models import Port, PortBinding
from resizeflow.errors import ResizeflowError
from resizeflow.openstack.base import VifSpec

DEFAULT_FIXED_RANGE = "10.0.0.0/24"
_ALLOCATION_ATTEMPTS = 20


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


class FixedIpsExhausted(ResizeflowError):
    code = 409
    msg_fmt = "Zero fixed IPs available in network %(network)s (%(cidr)s)."


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
    network: str
    mac_address: str
    ip_address: str | None


def _by_id(port: PortRow) -> str:
    return port.id


def _as_int(address: str) -> int:
    # NOTE: every used address of the network is parsed on each boot, and
    # inet_aton is several times faster than ipaddress for the dotted quads
    # stored here.
    return int.from_bytes(socket.inet_aton(address), "big")


class SqlNetwork:
    """The network driver of one transaction, or of one step's transactions.

    It reads an instance's ports once and remembers them: a step asks for
    them several times (its VIFs, the bindings it sets up, each notification),
    and a port's id, network, MAC and address never change while it lives.
    Allocating or deallocating ports here forgets what was read.
    """

    def __init__(self, session: Session, fixed_range: str = DEFAULT_FIXED_RANGE) -> None:
        self.session = session
        self.subnet = ipaddress.IPv4Network(fixed_range)
        self._read: dict[str, tuple[PortRow, ...]] = {}

    def ports(self, instance_uuid: str) -> tuple[PortRow, ...]:
        """The instance's ports, by id."""
        found = self._read.get(instance_uuid)
        if found is None:
            # Reading the ports must not flush the step's pending changes early.
            with self.session.no_autoflush:
                rows = self.session.execute(
                    select(Port.id, Port.network, Port.mac_address, Port.ip_address)
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
            Port.network,
            Port.mac_address,
            Port.ip_address,
        )

    def remember(self, instance_uuid: str, read: list[list[Any]] | None) -> None:
        """Take the ports read by :meth:`ports_column` as read here."""
        self._read[instance_uuid] = tuple(sorted((PortRow(*r) for r in read or ()), key=_by_id))

    def _ports(self, instance_uuid: str) -> list[str]:
        return [p.id for p in self.ports(instance_uuid)]

    def allocate_for_instance(self, instance_uuid: str, networks: Sequence[str]) -> None:
        self._read.pop(instance_uuid, None)
        for net in networks:
            self._allocate_port(instance_uuid, net)

    def _free_address(self, network: str, skip: set[str]) -> str:
        addresses = self.session.scalars(
            select(Port.ip_address).where(Port.network == network, Port.ip_address.is_not(None))
        )
        used = {_as_int(address) for address in addresses if address is not None}
        used.update(_as_int(address) for address in skip)
        hosts = iter(self.subnet.hosts())
        next(hosts, None)  # the first host address is the gateway, as in nova-network
        start = next(hosts, None)
        if start is not None:
            # The host addresses run up to the broadcast address, which a /31
            # does not have (hosts() says so); integers, as an address object
            # per candidate would cost more than the lookup.
            last = int(self.subnet.broadcast_address) - (self.subnet.num_addresses > 2)
            for candidate in range(int(start), last + 1):
                if candidate not in used:
                    return str(ipaddress.IPv4Address(candidate))
        raise FixedIpsExhausted(network=network, cidr=str(self.subnet))

    def _allocate_port(self, instance_uuid: str, network: str) -> Port:
        tried: set[str] = set()
        for _ in range(_ALLOCATION_ATTEMPTS):
            address = self._free_address(network, tried)
            port = Port(
                id=str(uuid.uuid4()),
                instance_uuid=instance_uuid,
                network=network,
                mac_address=_mac(),
                ip_address=address,
            )
            try:
                # NOTE: a savepoint, so losing the address to a concurrent boot
                # rolls back this insert alone, not the caller's transaction.
                with self.session.begin_nested():
                    self.session.add(port)
            except IntegrityError:
                tried.add(address)
                continue
            return port
        raise FixedIpsExhausted(network=network, cidr=str(self.subnet))

    def vifs(self, instance_uuid: str) -> tuple[VifSpec, ...]:
        """The instance's ports, as the virt driver plugs them."""
        return tuple(VifSpec(p.id, p.mac_address, p.ip_address) for p in self.ports(instance_uuid))

    def setup_networks_on_host(self, instance_uuid: str, host: str) -> None:
        if not self.ports(instance_uuid):
            return
        stmt = _bind_statement(self.session.get_bind().dialect.name)
        self.session.execute(stmt, {"b_host": host, "b_instance": instance_uuid})

    def teardown_networks_on_host(self, instance_uuid: str, host: str) -> None:
        self.session.execute(_teardown_statement(), {"b_host": host, "b_instance": instance_uuid})

    def deallocate_for_instance(self, instance_uuid: str) -> None:
        ports = self._ports(instance_uuid)
        self._read.pop(instance_uuid, None)
        if ports:
            self.session.execute(delete(PortBinding).where(PortBinding.port_id.in_(ports)))
            self.session.execute(delete(Port).where(Port.id.in_(ports)))
