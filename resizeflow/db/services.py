"""Service heartbeats: how the rest of the system knows a compute host is up.

Every worker process beats on its own row of ``worker_processes``, and on its
host's ``services`` row, whose ``last_seen_at`` is therefore the newest beat
of any of the host's processes. Readers only look at the service row (Nova's
servicegroup rule); a process that stops for good takes the host down at once
only when no other process of that host is still alive.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from resizeflow import errors
from resizeflow.db.models import Service, StepJournal, WorkerProcess, utcnow
from resizeflow.states import JournalStatus

COMPUTE = "nova-compute"


def _service(session: Session, host: str, topic: str, binary: str = COMPUTE) -> Service:
    svc = session.scalars(
        select(Service).where(Service.host == host, Service.binary == binary).with_for_update()
    ).first()
    if svc is None:
        svc = Service(host=host, binary=binary, topic=topic, report_count=0)
        session.add(svc)
        session.flush()
    return svc


def heartbeat(
    session: Session, host: str, topic: str, binary: str = COMPUTE, node: str | None = None
) -> Service:
    """One beat of a host's process (``node``), which is also a beat of the host."""
    svc = _service(session, host, topic, binary)
    now = utcnow()
    svc.topic = topic
    svc.report_count += 1
    svc.last_seen_at = now
    if node is not None:
        proc = session.scalars(select(WorkerProcess).where(WorkerProcess.node == node)).first()
        if proc is not None:
            proc.last_seen_at = now
    return svc


def process_alive(
    proc: WorkerProcess, down_time: float, machine: str, now: dt.datetime | None = None
) -> bool:
    """Seen within ``down_time``, and, on this machine, its pid still running.

    NOTE: the pid check lets a worker killed with SIGKILL be replaced at once
    on its machine, instead of after ``down_time``; the age check keeps a
    reused pid from keeping a dead process alive for ever. A zombie (killed,
    not yet reaped by whatever started it) is dead: its pid answers signal 0.
    """
    if ((now or utcnow()) - proc.last_seen_at).total_seconds() > down_time:
        return False
    if proc.machine != machine:
        return True
    if proc.pid == os.getpid():
        return False  # an earlier incarnation of this very process (a container's pid 1)
    try:
        os.kill(proc.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(proc.pid)


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False  # no procfs: the signal's answer stands
    # The state follows the command name, which is in parentheses and may hold spaces.
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def _lapsed_holders(session: Session, nodes: set[str], now: dt.datetime) -> set[str]:
    """Those of ``nodes`` holding a running step whose lease they let lapse.

    A live worker renews the lease of every step it runs on each heartbeat,
    so one that has not is gone: a process on another machine (whose pid
    cannot be checked from here) is known dead this way long before its
    heartbeat ages past ``down_time``.
    """
    held = session.execute(
        select(StepJournal.worker, StepJournal.lease_expires_at).where(
            StepJournal.status == JournalStatus.RUNNING, StepJournal.host.is_not(None)
        )
    ).all()
    return {
        node
        for worker, expires in held
        if worker
        and (node := worker.rpartition("/")[0]) in nodes
        and expires is not None
        and expires <= now
    }


class DuplicateWorker(errors.Conflict):
    msg_fmt = "%(message)s"


@dataclass(frozen=True)
class Joined:
    """A worker process that joined its host.

    ``alone``: no other process of the host is alive, so every message of the
    host's queue that a consumer took and never acknowledged was taken by a
    dead one.
    """

    node: str
    alone: bool


def join(
    session: Session,
    host: str,
    topic: str,
    *,
    machine: str,
    pid: int,
    down_time: float,
    exclusive: bool,
) -> Joined:
    """Register a starting worker process of ``host``: its slot and its node name.

    ``exclusive`` refuses a second live process for the host (the libvirt test
    driver keeps its domains inside one process).
    """
    # The service row's lock serialises processes of one host that start together.
    _service(session, host, topic)
    now = utcnow()
    rows = session.scalars(select(WorkerProcess).where(WorkerProcess.host == host)).all()
    alive = [p for p in rows if process_alive(p, down_time, machine, now)]
    # Elsewhere, where no pid can be checked: a process that lets its step
    # leases lapse is dead. (Here the pid says so for certain, and a live
    # process whose lapsed row only awaits a retry keeps its slot.)
    lapsed = _lapsed_holders(session, {p.node for p in alive if p.machine != machine}, now)
    alive = [p for p in alive if p.node not in lapsed]
    for dead in set(rows) - set(alive):
        session.delete(dead)
    session.flush()
    if exclusive and alive:
        other = alive[0]
        raise DuplicateWorker(
            message=f"host {host} already has a worker ({other.node}, pid {other.pid}); "
            "its libvirt test:/// domains live in that one process, so a second worker "
            "for the host is refused. Scale it with --concurrency or --autoscale instead."
        )
    used = {p.slot for p in alive}
    slot = next(n for n in range(1, len(used) + 2) if n not in used)
    proc = WorkerProcess(
        host=host,
        slot=slot,
        node=f"{host}-{slot}@{machine}",
        machine=machine,
        pid=pid,
        started_at=now,
        last_seen_at=now,
    )
    session.add(proc)
    session.flush()
    return Joined(proc.node, alone=not alive)


def leave(session: Session, host: str, node: str | None, down_time: float, machine: str) -> None:
    """A process of ``host`` stops for good: the host is down once none is left alive."""
    rows = session.scalars(select(WorkerProcess).where(WorkerProcess.host == host)).all()
    for proc in rows:
        if proc.node == node:
            session.delete(proc)
    others = [p for p in rows if p.node != node and process_alive(p, down_time, machine)]
    if not others:
        mark_stopped(session, host)


def processes(session: Session, host: str | None = None) -> Sequence[WorkerProcess]:
    query = select(WorkerProcess).order_by(WorkerProcess.host, WorkerProcess.slot)
    if host is not None:
        query = query.where(WorkerProcess.host == host)
    return session.scalars(query).all()


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
