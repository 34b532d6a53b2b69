"""The hosts' VXLAN tunnel endpoints (Neutron's ``ml2_vxlan_endpoints``), as rows.

Every host that plugs a network's bridge records where its tunnels end: a
compute worker at its start, the DHCP agent at its start and on every sync.
A step hands all of them to the virt driver with the instance
(:attr:`resizeflow.virt.base.InstanceSpec.tunnel_peers`), which floods each
network's broadcasts to every endpoint but its own host's.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from resizeflow.db.models import TunnelEndpoint, utcnow
from resizeflow.openstack.base import TunnelPeer


def record_endpoint(session: Session, host: str, ip_address: str, udp_port: int) -> None:
    """Record (or move, or just refresh) ``host``'s endpoint: one statement, so
    two processes of one host starting at once both succeed."""
    upsert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    now = utcnow()
    stmt = upsert(TunnelEndpoint).values(
        host=host, ip_address=ip_address, udp_port=udp_port, updated_at=now
    )
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=[TunnelEndpoint.host],
            set_={"ip_address": ip_address, "udp_port": udp_port, "updated_at": now},
        )
    )


def forget_endpoint(session: Session, host: str) -> None:
    """Remove ``host``'s endpoint: the other hosts drop it from their flood lists."""
    row = session.get(TunnelEndpoint, host)
    if row is not None:
        session.delete(row)


def tunnel_peers(session: Session) -> tuple[TunnelPeer, ...]:
    """Every host's endpoint, by host name."""
    rows = session.execute(
        select(TunnelEndpoint.host, TunnelEndpoint.ip_address, TunnelEndpoint.udp_port).order_by(
            TunnelEndpoint.host
        )
    )
    return tuple(TunnelPeer(host, ip, port) for host, ip, port in rows)
