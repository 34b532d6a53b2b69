"""Service heartbeats: how the rest of the system knows a compute host is up."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from resizeflow.db.models import Service, utcnow

COMPUTE = "nova-compute"


def heartbeat(session: Session, host: str, topic: str, binary: str = COMPUTE) -> Service:
    svc = session.scalars(
        select(Service).where(Service.host == host, Service.binary == binary).with_for_update()
    ).first()
    if svc is None:
        svc = Service(host=host, binary=binary, topic=topic, report_count=0)
        session.add(svc)
    svc.topic = topic
    svc.report_count += 1
    svc.last_seen_at = utcnow()
    return svc


def mark_stopped(session: Session, host: str, binary: str = COMPUTE) -> None:
    svc = session.scalars(
        select(Service).where(Service.host == host, Service.binary == binary)
    ).first()
    if svc is not None:
        svc.last_seen_at = None


def is_up(svc: Service, down_time: float, now: dt.datetime | None = None) -> bool:
    """Nova's servicegroup rule: up if not forced down and seen within ``down_time``."""
    if svc.forced_down or svc.last_seen_at is None:
        return False
    return ((now or utcnow()) - svc.last_seen_at).total_seconds() <= down_time


def get(session: Session, host: str, binary: str = COMPUTE) -> Service | None:
    return session.scalars(
        select(Service).where(Service.host == host, Service.binary == binary)
    ).first()


def advertise_migration_address(
    session: Session, host: str, address: str, binary: str = COMPUTE
) -> None:
    """Record where other hosts reach ``host`` over SSH; call after its first heartbeat."""
    svc = get(session, host, binary)
    if svc is None:
        raise LookupError(f"no {binary} service on {host} yet")
    svc.migration_address = address


def migration_address(session: Session, host: str, binary: str = COMPUTE) -> str:
    """The address to copy disks to ``host`` at: the one it advertised, else its name."""
    svc = get(session, host, binary)
    return (svc.migration_address if svc is not None else None) or host
