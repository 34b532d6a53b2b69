"""Bulk-load a cloud's worth of rows into a scratch PostgreSQL database, with COPY.

The scale bench needs the tables as 1,000 hosts would leave them after a
while: a history of finished migrations, thousands of workflows in flight and
the step journal and instance actions of all of them. Driving that many
workflows through the stack would take hours, so the rows are written
directly, shaped as the product writes them (the flow table gives each flow's
steps and hosts, ``resizeflow.routing.plan``), into a schema created by the
product's own migrations.

Per instance there are two migrations: an older one that ended (confirmed,
reverted or errored) and a newer one that is in flight, awaiting confirmation
or ended. Every workflow in flight has a running step whose lease outlives
the bench, so the reconciler finds nothing to re-drive and its pass is its
scan; every resize awaiting confirmation finished within the last half hour.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from resizeflow import flows, routing
from resizeflow.db.journal import PlannedStep
from resizeflow.db.models import utcnow
from resizeflow.db.session import Database
from resizeflow.states import JournalStatus, MigrationStatus, TaskState, VmState

FLAVOR = {
    "id": 1,
    "flavorid": "1",
    "name": "m1.tiny",
    "vcpus": 1,
    "memory_mb": 512,
    "root_gb": 1,
    "ephemeral_gb": 0,
    "swap": 0,
}
FIXED_RANGE = "10.0.0.0/16"
NETWORK = "private"
NETWORK_ID = "5b0c6e7e-2f7a-4c1e-9d55-0a6b3c9e1f01"
WORKER_MACHINE = "scale-bench"
# The instance action each flow records, as the service layer names them (Nova's).
ACTIONS = {
    "spawn": "create",
    "resize": "resize",
    "confirm": "confirmResize",
    "revert": "revertResize",
}
# Awaiting confirmation for at most this long: a window longer than this makes
# the auto-confirm pass a scan that finds nothing due.
AWAITING_FOR = dt.timedelta(minutes=30)


_FLAVOR_JSON = json.dumps(FLAVOR)
_DONE = JournalStatus.DONE.value
_TOOK = [dt.timedelta(seconds=0.005 + k / 1000 * 2.0) for k in range(1000)]
_HOP = dt.timedelta(milliseconds=5)
_FIVE_S = dt.timedelta(seconds=5)


@dataclass(frozen=True)
class Shape:
    """How many of each: ``migrations`` in all, a tenth of them in flight."""

    hosts: int = 1000
    migrations: int = 100_000

    @property
    def instances(self) -> int:
        return max(1, self.migrations // 2)

    @property
    def in_flight(self) -> int:
        return max(1, self.migrations // 10)

    @property
    def awaiting_confirm(self) -> int:
        return max(1, self.migrations // 20)

    @property
    def errored(self) -> int:
        return max(1, self.migrations // 100)


def host_names(n: int) -> list[str]:
    return [f"scale-{i:04d}" for i in range(n)]


@dataclass
class _Rows:
    """Rows per table, as tuples in the order of ``COLUMNS``, and the ids handed out."""

    tables: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    next_id: dict[str, int] = field(default_factory=dict)

    def add(self, table: str, *values: Any) -> int:
        ident = self.next_id.get(table, 1)
        self.next_id[table] = ident + 1
        self.tables.setdefault(table, []).append((ident, *values))
        return ident


COLUMNS = {
    "compute_nodes": "id host node vcpus memory_mb local_gb vcpus_used memory_mb_used "
    "local_gb_used cpu_allocation_ratio ram_allocation_ratio disk_allocation_ratio "
    "created_at updated_at",
    "services": "id host binary topic report_count disabled forced_down last_seen_at "
    "created_at migration_address",
    "worker_processes": "id host slot node machine pid started_at last_seen_at",
    "instances": "uuid display_name project_id user_id host node flavor system_metadata "
    "vm_state task_state power_state locked launched_at created_at updated_at deleted",
    "migrations": "id uuid instance_uuid migration_type source_compute source_node "
    "dest_compute dest_node old_instance_type_id new_instance_type_id status user_id "
    "project_id created_at updated_at",
    "instance_actions": "id action instance_uuid request_id user_id project_id start_time "
    "finish_time",
    "step_journal": "id migration_id instance_uuid request_id action_id flow step position "
    "host status attempts deliveries applied worker holder enqueued_at started_at "
    "finished_at heartbeat_at lease_expires_at",
    "networks": "id project_id name description status admin_state_up shared mtu "
    "segmentation_id created_at updated_at",
    "subnets": "id network_id project_id name description ip_version cidr gateway_ip "
    "enable_dhcp created_at updated_at",
    "ports": "id instance_uuid network_id mac_address ip_address created_at updated_at",
}
# Tables whose ids the loader hands out; their sequences are moved past them.
_SERIAL = (
    "compute_nodes",
    "services",
    "worker_processes",
    "migrations",
    "instance_actions",
    "step_journal",
)


class _Builder:
    def __init__(self, shape: Shape, now: dt.datetime) -> None:
        self.shape, self.now = shape, now
        self.rows = _Rows()
        self.hosts = host_names(shape.hosts)
        self.workers = {h: f"{h}-1@{WORKER_MACHINE}" for h in self.hosts}
        self.seq = 0  # makes durations and times vary, reproducibly
        self.ids = 0
        self.plans: dict[tuple[str, str, str], list[PlannedStep]] = {}

    def tick(self, span: float) -> float:
        self.seq += 1
        return (self.seq * 7919 % 1000) / 1000 * span

    def plan(self, flow: flows.Flow, source: str, dest: str) -> list[PlannedStep]:
        """The flow's steps on their hosts, as the service layer plans them (memoized)."""
        key = (flow.name, source, dest)
        if key not in self.plans:
            if flow.subject is flows.Subject.MIGRATION:
                self.plans[key] = routing.plan(flow, source=source, dest=dest)
            else:
                self.plans[key] = routing.plan(flow, host=source)
        return self.plans[key]

    def took(self) -> dt.timedelta:
        """A step's duration, 5 ms to 2 s."""
        self.seq += 1
        return _TOOK[self.seq * 7919 % 1000]

    def hosts_rows(self) -> None:
        now = self.now
        for i, host in enumerate(self.hosts):
            self.rows.add(
                "compute_nodes", host, host, 64, 262144, 4000, 0, 0, 0, 16.0, 1.5, 1.0, now, now
            )
            self.rows.add(
                "services", host, "nova-compute", "compute", 1, False, False, now, now, host
            )
            self.rows.add(
                "worker_processes",
                host,
                1,
                f"{host}-1@{WORKER_MACHINE}",
                WORKER_MACHINE,
                10000 + i,
                now,
                now,
            )

    def uuid(self) -> str:
        """A fresh uuid-shaped id: uuid4() costs more than the rest of a row."""
        self.ids += 1
        return f"5ca1e000-0000-4000-8000-{self.ids:012x}"

    def action(self, name: str, inst: str, start: dt.datetime, done: bool) -> tuple[int, str]:
        request = f"req-{self.uuid()}"
        finish = start + _FIVE_S if done else None
        ident = self.rows.add("instance_actions", name, inst, request, "u", "p", start, finish)
        return ident, request

    def flow_rows(
        self,
        flow: flows.Flow,
        steps: list[PlannedStep],
        mig_id: int | None,
        inst: str,
        start: dt.datetime,
        done_upto: int,
    ) -> None:
        """The journal of one flow: steps before ``done_upto`` done, that one running, the
        rest pending; ``done_upto`` past the end means the whole flow is done."""
        action_id, request = self.action(ACTIONS[flow.name], inst, start, done_upto >= len(steps))
        at = start
        for pos, planned in enumerate(steps):
            worker = self.workers[planned.host]
            if pos < done_upto:
                took = self.took()
                retried = self.seq % 20 == 0
                self.rows.add(
                    "step_journal",
                    mig_id,
                    inst,
                    request,
                    action_id,
                    flow.name,
                    planned.step,
                    pos,
                    planned.host,
                    _DONE,
                    2 if retried else 1,
                    2 if retried else 1,
                    1,
                    worker,
                    None,
                    at,
                    at,
                    at + took,
                    at + took,
                    None,
                )
                at += took + _HOP
            elif pos == done_upto:
                # A live lease that outlasts the bench: the worker is still on it.
                self.rows.add(
                    "step_journal",
                    mig_id,
                    inst,
                    request,
                    action_id,
                    flow.name,
                    planned.step,
                    pos,
                    planned.host,
                    JournalStatus.RUNNING.value,
                    1,
                    1,
                    0,
                    worker,
                    uuid.uuid4().hex,
                    at,
                    at,
                    None,
                    self.now,
                    self.now + dt.timedelta(days=1),
                )
            else:
                self.rows.add(
                    "step_journal",
                    mig_id,
                    inst,
                    request,
                    action_id,
                    flow.name,
                    planned.step,
                    pos,
                    planned.host,
                    JournalStatus.PENDING.value,
                    0,
                    0,
                    0,
                    None,
                    None,
                    at,
                    None,
                    None,
                    None,
                    None,
                )

    def migration(
        self, inst: str, src: str, dst: str, status: MigrationStatus, at: dt.datetime
    ) -> int:
        return self.rows.add(
            "migrations",
            self.uuid(),
            inst,
            "resize",
            src,
            src,
            dst,
            dst,
            1,
            2,
            status.value,
            "u",
            "p",
            at,
            at,
        )

    def build(self) -> _Rows:
        shape = self.shape
        self.hosts_rows()
        subnet = ipaddress.IPv4Network(FIXED_RANGE)
        self.rows.tables["networks"] = [
            (NETWORK_ID, "", NETWORK, "", "ACTIVE", True, True, 1450, 1001, self.now, self.now)
        ]
        self.rows.tables["subnets"] = [
            (
                self.uuid(),
                NETWORK_ID,
                "",
                f"{NETWORK}-subnet",
                "",
                4,
                str(subnet),
                str(subnet.network_address + 1),
                True,
                self.now,
                self.now,
            )
        ]
        first_ip = int(subnet.network_address) + 2  # past the gateway, as IPAM hands them out
        max_ports = subnet.num_addresses - 3
        for i in range(shape.instances):
            self.instance(i, first_ip if i < max_ports else None)
        return self.rows

    def instance(self, i: int, first_ip: int | None) -> None:
        shape, now = self.shape, self.now
        inst = self.uuid()
        src = self.hosts[i % len(self.hosts)]
        dst = self.hosts[(i + 1) % len(self.hosts)]
        born = now - dt.timedelta(days=30) + dt.timedelta(seconds=i)
        # The newer migration's fate; the older one always ended.
        if i < shape.in_flight:
            kind = ("resize", "confirm", "revert")[i % 3]
        elif i < shape.in_flight + shape.awaiting_confirm:
            kind = "awaiting"
        elif i < shape.in_flight + shape.awaiting_confirm + shape.errored:
            kind = "error"
        else:
            kind = "ended"
        vm, task = VmState.ACTIVE, None
        if kind == "resize":
            vm, task = VmState.ACTIVE, TaskState.RESIZE_MIGRATING
        elif kind in ("confirm", "awaiting"):
            vm = VmState.RESIZED
        elif kind == "revert":
            vm, task = VmState.RESIZED, TaskState.RESIZE_REVERTING
        self.rows.tables.setdefault("instances", []).append(
            (
                inst,
                f"vm-{i}",
                "p",
                "u",
                src,
                src,
                _FLAVOR_JSON,
                "{}",
                vm.value,
                task.value if task else None,
                1,
                False,
                born,
                born,
                born,
                False,
            )
        )
        if first_ip is not None:
            self.rows.tables.setdefault("ports", []).append(
                (
                    self.uuid(),
                    inst,
                    NETWORK_ID,
                    f"fa:16:3e:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}",
                    str(ipaddress.IPv4Address(first_ip + i)),
                    born,
                    born,
                )
            )
        spawn = self.plan(flows.SPAWN, src, src)
        self.flow_rows(flows.SPAWN, spawn, None, inst, born, len(spawn))
        resize = self.plan(flows.RESIZE, src, dst)
        # The older migration: a resize there and back, confirmed or reverted.
        old_at = born + dt.timedelta(days=1)
        second = flows.CONFIRM if i % 3 else flows.REVERT
        old_status = MigrationStatus.CONFIRMED if i % 3 else MigrationStatus.REVERTED
        mig = self.migration(inst, src, dst, old_status, old_at)
        self.flow_rows(flows.RESIZE, resize, mig, inst, old_at, len(resize))
        steps = self.plan(second, src, dst)
        self.flow_rows(second, steps, mig, inst, old_at + dt.timedelta(minutes=5), len(steps))
        # The newer one.
        new_at = (
            now - dt.timedelta(seconds=60 + self.tick(1500))
            if kind != "ended"
            else (born + dt.timedelta(days=2))
        )
        status = {
            "resize": MigrationStatus.MIGRATING,
            "confirm": MigrationStatus.CONFIRMING,
            "revert": MigrationStatus.REVERTING,
            "awaiting": MigrationStatus.FINISHED,
            "error": MigrationStatus.ERROR,
            "ended": old_status,
        }[kind]
        mig = self.migration(inst, src, dst, status, new_at)
        running = i % len(resize) if kind == "resize" else len(resize)
        self.flow_rows(flows.RESIZE, resize, mig, inst, new_at, running)
        if kind in ("confirm", "revert", "ended"):
            flow = {"confirm": flows.CONFIRM, "revert": flows.REVERT}.get(kind, second)
            steps = self.plan(flow, src, dst)
            upto = i % len(steps) if kind != "ended" else len(steps)
            self.flow_rows(flow, steps, mig, inst, new_at + dt.timedelta(seconds=30), upto)


def _copy(cursor: Any, table: str, rows: Iterable[tuple[Any, ...]]) -> None:
    cols = ", ".join(f'"{c}"' for c in COLUMNS[table].split())
    with cursor.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def load(database: Database, shape: Shape) -> dict[str, int]:
    """Write the rows and ANALYZE; returns the row count per table."""
    rows = _Builder(shape, utcnow()).build()
    order = (
        "compute_nodes",
        "services",
        "worker_processes",
        "instances",
        "migrations",
        "instance_actions",
        "step_journal",
        "networks",
        "subnets",
        "ports",
    )
    raw = database.engine.raw_connection()
    try:
        conn = raw.driver_connection
        assert conn is not None
        with conn.cursor() as cur:
            for table in order:
                _copy(cur, table, rows.tables.get(table, []))
            for table in _SERIAL:
                # The table names are this module's constants, not input.
                cur.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608
                    f"(SELECT coalesce(max(id), 1) FROM {table}))"
                )
        conn.commit()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("VACUUM ANALYZE")
        conn.autocommit = False
    finally:
        raw.close()
    return {table: len(rows.tables.get(table, [])) for table in order}


def chunks(items: list[str], n: int) -> Iterator[list[str]]:
    """``items`` dealt round-robin into ``n`` lists."""
    for k in range(n):
        yield items[k::n]
