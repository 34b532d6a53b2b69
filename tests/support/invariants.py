"""Checks that must hold after any workflow, complete or failed.

See "What holds after every workflow" in docs/architecture.md.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from typing import Any

from sqlalchemy import select

from resizeflow.conf import Settings
from resizeflow.db.models import (
    Allocation,
    ComputeNode,
    Instance,
    InstanceFault,
    Migration,
    Port,
    PortBinding,
    StepJournal,
)
from resizeflow.db.session import Database
from resizeflow.openstack.base import Resources
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


def usage_violations(database: Database, servers: Collection[str] | None = None) -> list[str]:
    """Every claim is held once, by the right consumer, on the right node.

    A step applied twice would claim or free twice, and show up here.
    ``servers``: those to check (and their migrations); every server if None.
    """
    problems = []
    with database.snapshot() as s:
        held: dict[str, dict[str, dict[str, int]]] = {}
        for consumer, host, rc, used in s.execute(
            select(
                Allocation.consumer_uuid,
                ComputeNode.host,
                Allocation.resource_class,
                Allocation.used,
            ).join(ComputeNode, ComputeNode.id == Allocation.node_id)
        ):
            held.setdefault(consumer, {}).setdefault(host, {})[rc] = used
        for inst in s.scalars(select(Instance).where(Instance.deleted.is_(False))):
            if servers is not None and inst.uuid not in servers:
                continue
            if inst.task_state is None and inst.vm_state != VmState.ERROR and inst.host:
                want = {inst.host: Resources.of_flavor(inst.flavor).as_classes()}
                if held.get(inst.uuid, {}) != want:
                    faults = s.scalars(
                        select(InstanceFault.message).where(
                            InstanceFault.instance_uuid == inst.uuid
                        )
                    ).all()
                    problems.append(
                        f"{inst.uuid} ({inst.vm_state.value}) holds {held.get(inst.uuid)}, "
                        f"not {want}; faults: {faults}"
                    )
        for mig in s.scalars(select(Migration)):
            if servers is not None and mig.instance_uuid not in servers:
                continue
            inst = s.get(Instance, mig.instance_uuid)
            if mig.status == MigrationStatus.FINISHED and inst and inst.old_flavor:
                want = {mig.source_compute: Resources.of_flavor(inst.old_flavor).as_classes()}
            elif mig.status in (MigrationStatus.CONFIRMED, MigrationStatus.REVERTED):
                want = {}
            else:
                continue
            if held.get(mig.uuid, {}) != want:
                problems.append(f"migration {mig.id} holds {held.get(mig.uuid)}, not {want}")
    return problems


def orphan_violations(
    database: Database,
    settings: Settings,
    domains: dict[str, list[dict[str, Any]]],
    servers: Collection[str] | None = None,
) -> list[str]:
    """No domain or ``_resize`` directory on a host its server is not on, but the
    source a resize awaiting confirmation (or one that failed) keeps.

    ``domains``: what each host's worker says it has defined, by host;
    ``servers``: those to check; every server if None.
    """
    problems = []
    with database.snapshot() as s:
        live = {i.uuid: i for i in s.scalars(select(Instance).where(Instance.deleted.is_(False)))}
        keeps_source = {
            (m.instance_uuid, m.source_compute)
            for m in s.scalars(
                select(Migration).where(
                    Migration.status.in_([MigrationStatus.FINISHED, MigrationStatus.ERROR])
                )
            )
        }
    for host, defined in domains.items():
        for d in defined:
            if servers is not None and d["uuid"] not in servers:
                continue
            inst = live.get(d["uuid"])
            if inst is None or (inst.host != host and (d["uuid"], host) not in keeps_source):
                problems.append(f"orphan domain {d['uuid']} on {host}")
        inst_dir = settings.instances_dir(host)
        for path in inst_dir.glob("*_resize") if inst_dir.exists() else []:
            owner = path.name.removesuffix("_resize")
            if servers is not None and owner not in servers:
                continue
            if (owner, host) not in keeps_source:
                problems.append(f"orphan {path.name} on {host}")
    return problems
