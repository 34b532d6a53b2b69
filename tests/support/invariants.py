"""Checks that must hold after any workflow, complete or failed.

See "What holds after every workflow" in docs/architecture.md.
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import select

from resizeflow.db.models import (
    Allocation,
    ComputeNode,
    Instance,
    Migration,
    Port,
    PortBinding,
    StepJournal,
)
from resizeflow.db.session import Database
from resizeflow.states import MIGRATION_IN_PROGRESS, JournalStatus, MigrationStatus, VmState

_USED = {"VCPU": "vcpus_used", "MEMORY_MB": "memory_mb_used", "DISK_GB": "local_gb_used"}


def allocation_violations(database: Database) -> list[str]:
    problems: list[str] = []
    with database.transaction() as s:
        sums: dict[tuple[int, str], int] = defaultdict(int)
        allocs = s.scalars(select(Allocation)).all()
        for a in allocs:
            sums[(a.node_id, a.resource_class)] += a.used
        for node in s.scalars(select(ComputeNode)):
            for rc, col in _USED.items():
                if sums[(node.id, rc)] != getattr(node, col):
                    problems.append(
                        f"{node.host}: {col}={getattr(node, col)} but allocations sum to "
                        f"{sums[(node.id, rc)]}"
                    )
        live_instances = set(s.scalars(select(Instance.uuid).where(Instance.deleted.is_(False))))
        # A migration holds the source allocation while it is underway; one in
        # error keeps it until an operator cleans it up, as it may still hold disks.
        holding = set(
            s.scalars(
                select(Migration.uuid).where(
                    Migration.status.in_([*MIGRATION_IN_PROGRESS, MigrationStatus.ERROR])
                )
            )
        )
        for consumer in {a.consumer_uuid for a in allocs}:
            if consumer not in live_instances and consumer not in holding:
                problems.append(f"allocation held by {consumer}, which is gone")
    return problems


def journal_violations(database: Database) -> list[str]:
    """Every step's work committed at most once, and exactly once if it is done.

    A row an abort superseded keeps the count of the work it did before.
    """
    kept = (JournalStatus.DONE, JournalStatus.SUPERSEDED)
    with database.snapshot() as s:
        return [
            f"{r.step} of {r.migration_id or r.instance_uuid} ({r.status}) applied {r.applied}x"
            for r in s.scalars(select(StepJournal))
            if r.applied > 1
            or (r.status == JournalStatus.DONE and r.applied != 1)
            or (r.applied == 1 and r.status not in kept)
        ]


def port_violations(database: Database) -> list[str]:
    """Ports follow their server, as Nova drives Neutron's bindings.

    A server at rest (no task, no migration underway or in error) has its
    ports bound to its host and set up there only; one waiting in
    VERIFY_RESIZE has them bound to its host (the dest), set up there and on
    the source. No port is left to a server that is gone.
    """
    problems: list[str] = []
    with database.snapshot() as s:
        live = {i.uuid: i for i in s.scalars(select(Instance).where(Instance.deleted.is_(False)))}
        moving: dict[str, MigrationStatus] = {}
        for uuid, status in s.execute(select(Migration.instance_uuid, Migration.status)):
            if status in MIGRATION_IN_PROGRESS or status == MigrationStatus.ERROR:
                moving[uuid] = status
        hosts: dict[str, set[str]] = defaultdict(set)
        for port_id, host in s.execute(select(PortBinding.port_id, PortBinding.host)):
            hosts[port_id].add(host)
        for port in s.scalars(select(Port).where(Port.instance_uuid.is_not(None))):
            inst = live.get(str(port.instance_uuid))
            if inst is None:
                problems.append(f"port {port.id} left to {port.instance_uuid}, which is gone")
                continue
            status = moving.get(inst.uuid)
            at_rest = status is None and inst.task_state is None
            waiting = status == MigrationStatus.FINISHED and inst.task_state is None
            if inst.vm_state in (VmState.ERROR, VmState.BUILDING) or not (at_rest or waiting):
                continue
            if port.binding_host_id != inst.host:
                problems.append(
                    f"port {port.id} of {inst.uuid} bound to {port.binding_host_id}, "
                    f"but the server is on {inst.host}"
                )
            if inst.host not in hosts[port.id] or (at_rest and len(hosts[port.id]) > 1):
                problems.append(
                    f"port {port.id} of {inst.uuid} (on {inst.host}) set up on "
                    f"{sorted(hosts[port.id])}"
                )
    return problems


def assert_allocation_invariant(database: Database) -> None:
    problems = (
        allocation_violations(database) + journal_violations(database) + port_violations(database)
    )
    assert not problems, "invariants broken:\n" + "\n".join(problems)
