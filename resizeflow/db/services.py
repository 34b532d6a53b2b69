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
