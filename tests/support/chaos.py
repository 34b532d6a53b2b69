"""A stack that can be broken on purpose, and the checks that must hold afterwards.

Everything here is private to one run: a PostgreSQL cluster of its own (so it
can be restarted), a redis-server of its own or a RabbitMQ vhost of its own
(so either can lose its data), two worker processes, and beat running the
reconciler with a short deadline (or, with :func:`default_timing`, with a
deployment's settings). The stack comes from :mod:`resizeflow.devstack`.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import uuid4

from sqlalchemy import func, select

from resizeflow.celery_app import make_app
from resizeflow.compute.policy import RequestContext
from resizeflow.conf import Settings
from resizeflow.db.models import (
    Flavor,
    Instance,
    InstanceFault,
    Migration,
    StepJournal,
    utcnow,
)
from resizeflow.devstack.brokers import create_vhost, delete_vhost, start_redis
from resizeflow.devstack.stack import PRIVATE_REDIS, build, free_port
from resizeflow.states import JournalStatus, MigrationStatus, TaskState
from tests.support.invariants import (
    allocation_violations,
    journal_violations,
    orphan_violations,
    port_violations,
    usage_violations,
)
from tests.support.stack import RABBITMQ_URL, stack_env, wait_for

HOSTS = ("chaos1", "chaos2")
# Every scenario's report, for the table printed at the end of the session.
REPORTS: list[Report] = []
PROJECT = "chaos"
# The faults a stack can be struck with, by name (the model-based run draws from them).
SIGKILL, HOST_DOWN, BROKER_LOST, DATABASE_RESTART, STEP_FAILURES = (
    "SIGKILL worker",
    "host down",
    "broker lost its data",
    "database restart",
    "step failures",
)
# A delete ends a workflow in flight: its migration goes to error, and to failed
# once both hosts are purged.
ENDED = {
    MigrationStatus.CONFIRMED,
    MigrationStatus.REVERTED,
    MigrationStatus.ERROR,
    MigrationStatus.FAILED,
}


class PrivatePostgres:
    """A throwaway PostgreSQL cluster, run as the postgres user, that can be restarted."""

    def __init__(self) -> None:
        bindir = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
        if not bindir:
            raise RuntimeError("PostgreSQL server binaries are not installed")
        self.bin = bindir[-1]
        # Outside pytest's private tmp dirs, which the postgres user cannot enter.
        self.base = Path(tempfile.mkdtemp(prefix="resizeflow-chaos-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres", "postgres")
        self.dir = self.base / "pgdata"
        self.sock = self.base / "pgsock"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *argv: str) -> None:
        cmd = list(argv)
        if os.geteuid() == 0:  # the server refuses to run as root
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        # From its own directory: the checkout may be one the postgres user cannot enter.
        subprocess.run(cmd, check=True, capture_output=True, timeout=120, cwd=self.base)

    def start(self) -> None:
        if not self.dir.exists():
            for path in (self.dir, self.sock):
                path.mkdir(parents=True)
                if os.geteuid() == 0:
                    shutil.chown(path, "postgres", "postgres")
            self._as_postgres(
                str(self.bin / "initdb"), "-D", str(self.dir), "-A", "trust", "-U", "postgres"
            )
        options = f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.dir),
            "-o",
            options,
            "-w",
            "-l",
            str(self.dir / "server.log"),
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.dir), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        self.stop("fast")
        self.start()

    def destroy(self) -> None:
        try:
            if (self.dir / "postmaster.pid").exists():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


@dataclass
class Fault:
    kind: str
    at: dt.datetime
    # When what was broken answered again (the broker back, empty; the worker ready).
    back_at: dt.datetime | None = None
    # The host it struck; None: the whole stack (the broker, the database).
    host: str | None = None
    # The steps in flight there as it struck (see ChaosStack.in_flight).
    in_flight: int = 0


@dataclass
class Report:
    scenario: str
    stack: str  # its database and broker: postgresql-redis, sqlite-rabbitmq, ...
    workflows: int = 0
    faults: int = 0
    stuck: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    recovery: list[float] = field(default_factory=list)
    # Servers whose migration ended in error, each with its last fault's message.
    errors: dict[str, str] = field(default_factory=dict)
    # Faults by kind that struck work in flight (see ChaosStack.struck).
    struck: dict[str, int] = field(default_factory=dict)
    seed: int | None = None

    def row(self) -> list[str]:
        def pct(q: float) -> str:
            if not self.recovery:
                return "-"
            data = sorted(self.recovery)
            return f"{data[min(len(data) - 1, int(q * len(data)))]:.1f}s"

        return [
            self.scenario,
            self.stack,
            str(self.seed),
            str(self.workflows),
            str(self.faults),
            ", ".join(f"{kind} {n}" for kind, n in sorted(self.struck.items())) or "-",
            str(len(self.errors)),
            str(len(self.stuck)),
            str(len(self.violations)),
            pct(0.5),
            pct(0.99),
        ]


# How fast the chaos stack notices faults: a short reconcile deadline and lease.
FAST_TIMING = {
    "retry_backoff": "0.1",
    "retry_backoff_max": "1",
    "step_max_retries": "10",
    "service_down_time": "10",
    "step_lease": "3",
    "reconcile_deadline": "4",
    "periodic_interval": "1",
}
# The settings that decide how fast a stack notices and recovers from faults.
TIMING_SETTINGS = (
    *FAST_TIMING,
    "report_interval",
    "worker_concurrency",
    "step_timeout",
    "broker_check_interval",
)


def default_timing() -> dict[str, str]:
    """Every setting of :data:`TIMING_SETTINGS` at its default, as a deployment has it."""
    defaults = Settings()
    return {name: str(getattr(defaults, name)) for name in TIMING_SETTINGS}


class ChaosStack:
    """``database`` is ``postgresql`` (a private cluster, which can be restarted) or
    ``sqlite`` (a file of the run's own); ``broker`` is ``redis`` or ``rabbitmq``.

    It is also what the model-based run drives (``tests.support.model.Target``).
    """

    hosts = HOSTS
    project = PROJECT
    # Two flavors that differ in RAM only (see start).
    flavors = ("ram-1", "ram-2")

    def __init__(
        self,
        base: Path,
        broker: str,
        timing: dict[str, str] | None = None,
        database: str = "postgresql",
    ) -> None:
        self.base, self.broker, self.database = base, broker, database
        self.timing = FAST_TIMING if timing is None else timing
        self.pg = PrivatePostgres() if database == "postgresql" else None
        self.vhost = ""
        self.faults: list[Fault] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.restarts = 0

    @property
    def name(self) -> str:
        return f"{self.database}-{self.broker}"

    @property
    def fault_kinds(self) -> tuple[str, ...]:
        kinds = (SIGKILL, HOST_DOWN, BROKER_LOST, STEP_FAILURES)
        return (*kinds, DATABASE_RESTART) if self.pg is not None else kinds

    def observe(self, uuid: str) -> None:
        """Nothing to see beyond the database: the hosts run libvirt's test driver."""

    def invariant_violations(self, servers: list[str]) -> list[str]:
        return self.usage_violations() + self.orphans()

    # -- life cycle ---------------------------------------------------------
    def start(self) -> None:
        if self.pg is not None:
            self.pg.start()
            database_url = self.pg.url
        else:
            database_url = f"sqlite:///{self.base / 'chaos.sqlite'}"
        if self.broker == "rabbitmq":
            self.vhost = f"rf-chaos-{uuid4().hex[:10]}"
        state_dir = self.base / "state"
        self.local = build(
            state_dir,
            broker=RABBITMQ_URL if self.vhost else PRIVATE_REDIS,
            vhost=self.vhost,
            database_url=database_url,
            env=stack_env(
                state_dir,
                node_vcpus="512",
                node_memory_mb="4194304",
                node_local_gb="100000",
                **self.timing,
                notifications="false",
                quota_cores="-1",
                quota_ram="-1",
                quota_instances="-1",
            ),
        )
        self.sup = self.local.sup
        self.settings, self.db, self.app, self.api = (
            self.local.settings,
            self.local.db,
            self.local.app,
            self.local.api,
        )
        with self.db.transaction() as s:
            # Two flavors that differ in RAM only, so a server can be resized
            # back and forth without ever shrinking its disk.
            s.add(Flavor(id=91, flavorid="ram-1", name="ram-1", vcpus=1, memory_mb=512, root_gb=1))
            s.add(Flavor(id=92, flavorid="ram-2", name="ram-2", vcpus=1, memory_mb=1024, root_gb=1))
        with self.lock:
            self.local.start_workers(HOSTS)
        self.local.start_beat()
        self.watcher = threading.Thread(target=self._watch, daemon=True)
        self.watcher.start()

    def _watch(self) -> None:
        """Restart a worker or beat that exits on its own, as systemd's
        Restart=on-failure (or compose's restart policy) does in production.

        Celery's worker can give up when its Redis connection breaks in the
        middle of a restart of the server; the supervisor brings it back.
        """
        while not self.stopping.is_set():
            for name, proc in list(self.sup.procs.items()):
                if name == "redis" or proc.poll() is None or self.stopping.is_set():
                    continue
                with self.lock:
                    if self.sup.procs.get(name) is not proc:
                        continue  # stopped or replaced on purpose meanwhile
                    self.restarts += 1
                    if name == "beat":
                        self.sup.resizeflow("beat", "beat")
                    elif name == "storage":
                        self.local.spawn_storage()
                    else:
                        self.local.spawn_worker(name.removeprefix("worker-"))
            self.stopping.wait(0.5)

    def stop(self) -> None:
        self.stopping.set()
        try:
            if hasattr(self, "local"):
                self.local.close()
        finally:
            if self.pg is not None:
                self.pg.destroy()

    def node(self, host: str) -> str:
        """A host's worker node: its one process always takes slot 1."""
        return f"{host}-1@{socket.gethostname()}"

    def start_worker(self, host: str) -> None:
        """Start ``host``'s worker and wait until it answers. The last fault that
        struck the host is over from the moment its worker is started again: a
        recovery time then includes the worker's own start."""
        started = utcnow()
        with self.lock:
            name = self.local.spawn_worker(host)
        for fault in reversed(self.faults):
            if fault.host == host:
                fault.back_at = fault.back_at or started
                break
        self.local.wait_workers([name])

    def kill_worker(self, host: str) -> None:
        fault = Fault(SIGKILL, utcnow(), host=host, in_flight=self.in_flight(host))
        with self.lock:
            self.local.kill_worker(host)
        self.faults.append(fault)

    def stop_worker(self, host: str) -> None:
        with self.lock:
            self.local.stop_worker(host, grace=60)

    def wait_for_resizes_under_way(self, count: int = 2, timeout: float = 60.0) -> None:
        """Block until ``count`` resizes are past planning and not yet finished.

        A fault meant to strike work in flight waits for this rather than a fixed
        delay: on a loaded machine the first resizes can reach the engine after it.
        """
        under_way = [
            MigrationStatus.PRE_MIGRATING,
            MigrationStatus.MIGRATING,
            MigrationStatus.POST_MIGRATING,
        ]

        def enough() -> bool:
            with self.db.snapshot() as s:
                found = s.scalars(
                    select(Migration.id).where(Migration.status.in_(under_way)).limit(count)
                ).all()
            return len(found) >= count

        wait_for(enough, timeout, f"{count} resizes under way")

    def in_flight(self, host: str | None = None) -> int:
        """The steps of ``host`` (of every host if None) that are running, waiting
        for a retry or waiting to run: what a fault striking now would strike.

        Read just before a fault strikes, into its :class:`Fault`: afterwards a
        re-drive rewrites the rows' times, and the evidence with them."""
        open_rows = [JournalStatus.PENDING, JournalStatus.RUNNING, JournalStatus.RETRYING]
        query = select(func.count(StepJournal.id)).where(StepJournal.status.in_(open_rows))
        if host is not None:
            query = query.where(StepJournal.host == host)
        with self.db.snapshot() as s:
            return int(s.scalar(query) or 0)

    def wait_for_work_on(self, host: str, timeout: float = 60.0) -> None:
        """Block until ``host`` has steps in flight: a fault meant to strike that
        host's work waits for this, never for a fixed delay."""
        wait_for(lambda: self.in_flight(host) > 0, timeout, f"work in flight on {host}")

    def struck(self) -> dict[str, int]:
        """How many faults of each kind struck work in flight."""
        found: dict[str, int] = {}
        for fault in self.faults:
            if fault.in_flight:
                found[fault.kind] = found.get(fault.kind, 0) + 1
        return found

    def fired(self) -> int:
        """How many times the failpoints struck, as the workers counted them."""
        with Path(self.settings.failpoints_file).open() as fh:
            fcntl.flock(fh, fcntl.LOCK_SH)
            table = json.loads(fh.read() or "{}")
        return sum(rule.get("fired", 0) for rules in table.values() for rule in rules)

    def start_storage(self) -> None:
        """Start the block-storage host (only the volume scenario needs one)."""
        with self.lock:
            self.local.spawn_storage()
        self.local.wait_storage()

    def failpoints_left(self, steps: tuple[str, ...]) -> dict[str, int]:
        """How many times each of ``steps``' failpoints may still be taken; a worker
        that takes one counts it down in the file as it enters it.

        Read under the lock the workers rewrite the file under, so a count is
        never read from a file half written (empty, or cut short).
        """
        with Path(self.settings.failpoints_file).open() as fh:
            fcntl.flock(fh, fcntl.LOCK_SH)
            table = json.loads(fh.read() or "{}")
        return {step: sum(r.get("times", 0) for r in table.get(step, [])) for step in steps}

    def hosts_running(self, step: str) -> list[str]:
        """The hosts whose workers are running ``step`` (a task name) now."""
        with self.db.snapshot() as s:
            found = s.scalars(
                select(StepJournal.host).where(
                    StepJournal.step == step.partition(":")[0],
                    StepJournal.status == JournalStatus.RUNNING,
                )
            ).all()
        return sorted({h for h in found if h})

    def restart_broker_losing_data(self) -> None:
        fault = Fault(BROKER_LOST, utcnow(), in_flight=self.in_flight())
        self.faults.append(fault)
        if self.broker == "redis":
            self.sup.kill("redis")
            # No persistence: the new server starts empty, as after a crash.
            start_redis(self.sup)
        else:
            # Deleting the vhost drops its queues, messages and connections;
            # it comes straight back, empty, as after a broker lost its disk.
            delete_vhost(self.vhost)
            create_vhost(RABBITMQ_URL, self.vhost)
        fault.back_at = utcnow()

    def restart_postgres(self) -> None:
        assert self.pg is not None, "a SQLite stack has no server to restart"
        fault = Fault("PostgreSQL restarted", utcnow(), in_flight=self.in_flight())
        self.faults.append(fault)
        self.pg.restart()
        fault.back_at = utcnow()

    def set_failpoints(self, table: dict[str, list[dict[str, Any]]]) -> None:
        # Under the workers' lock: a worker never reads the table half written.
        with Path(self.settings.failpoints_file).open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            fh.truncate(0)
            fh.write(json.dumps(table))

    # -- workload -----------------------------------------------------------
    def user(self) -> RequestContext:
        return RequestContext(user_id="chaos", project_id=PROJECT)

    def boot(self, count: int, flavor: str = "1") -> list[str]:
        uuids = [
            self.api.create(self.user(), name=f"c{i}", flavor_ref=flavor) for i in range(count)
        ]
        wait_for(lambda: self._all_idle(uuids), 120, "the servers to boot")
        return uuids

    def _all_idle(self, uuids: list[str]) -> bool:
        with self.db.snapshot() as s:
            rows = s.execute(select(Instance.task_state).where(Instance.uuid.in_(uuids))).all()
        return len(rows) == len(uuids) and all(t is None for (t,) in rows)

    def resize_all(self, uuids: list[str]) -> dict[str, int]:
        migs = {u: self.api.resize(self.user(), u, "2") for u in uuids}
        wait_for(
            lambda: self._migrations_in(list(migs.values()), {MigrationStatus.FINISHED, *ENDED}),
            180,
            "the resizes to finish",
        )
        return migs

    def _migrations_in(self, ids: list[int], statuses: set[MigrationStatus]) -> bool:
        with self.db.snapshot() as s:
            found = s.scalars(select(Migration.status).where(Migration.id.in_(ids))).all()
        return len(found) == len(ids) and all(st in statuses for st in found)

    def finish_all(
        self, migs: dict[str, int], call: Callable[[str, str], Any] | None = None
    ) -> int:
        """Confirm half and revert the other half, all at once; returns how many were sent."""
        sent = 0
        for i, uuid in enumerate(migs):
            verb = "confirm" if i % 2 == 0 else "revert"
            (call or self._finish)(uuid, verb)
            sent += 1
        return sent

    def _finish(self, uuid: str, verb: str) -> None:
        fn = self.api.confirm_resize if verb == "confirm" else self.api.revert_resize
        fn(self.user(), uuid)

    # -- reads ----------------------------------------------------------------
    def migration_status(self, mig_id: int) -> str:
        with self.db.snapshot() as s:
            mig = s.get(Migration, mig_id)
            return mig.status.value if mig else "missing"

    def workflow_over(self, mig_id: int) -> bool:
        with self.db.snapshot() as s:
            mig = s.get(Migration, mig_id)
            inst = s.get(Instance, mig.instance_uuid) if mig else None
            return (
                mig is not None
                and mig.status in ENDED
                and self._flow_over(s, mig_id)
                and (inst is None or inst.task_state in (None, TaskState.DELETING))
            )

    def source_of(self, mig_id: int) -> str:
        with self.db.snapshot() as s:
            mig = s.get(Migration, mig_id)
            assert mig is not None
            return mig.source_compute

    def deleted(self, uuid: str) -> bool:
        with self.db.snapshot() as s:
            inst = s.get(Instance, uuid)
            return inst is None or inst.deleted

    def snapshot(self, uuids: list[str]) -> list[tuple[Any, ...]]:
        """What a refused request must leave unchanged."""
        with self.db.snapshot() as s:
            rows = [
                (i.uuid, i.vm_state, i.task_state, i.host)
                for i in s.scalars(select(Instance).where(Instance.uuid.in_(uuids)))
            ]
            rows += [
                (m.id, m.status)
                for m in s.scalars(select(Migration).where(Migration.instance_uuid.in_(uuids)))
            ]
            rows.append(("journal rows", len(s.scalars(select(StepJournal.id)).all())))
        return sorted(rows, key=str)

    # -- checks -------------------------------------------------------------
    def settle(self, report: Report, migs: list[int], timeout: float = 180.0) -> None:
        """Wait for every migration to end, then check every invariant into ``report``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._settled(migs):
            time.sleep(0.5)
        with self.db.snapshot() as s:
            for mig in s.scalars(select(Migration).where(Migration.id.in_(migs))):
                if mig.status not in ENDED or not self._flow_over(s, mig.id):
                    report.stuck.append(f"migration {mig.id} stuck in {mig.status.value}")
                elif mig.status == MigrationStatus.ERROR and not self.deleted(mig.instance_uuid):
                    # (A deleted server's migration in error is the delete's doing,
                    # on its way to failed: there is no fault to show.)
                    faults = s.scalars(
                        select(InstanceFault.message).where(
                            InstanceFault.instance_uuid == mig.instance_uuid
                        )
                    ).all()
                    if not faults:
                        report.violations.append(f"migration {mig.id} in error without a fault")
                    report.errors[mig.instance_uuid] = faults[-1] if faults else "?"
            reverting = s.scalars(
                select(Instance.uuid).where(Instance.task_state == TaskState.RESIZE_REVERTING)
            ).all()
            report.stuck += [f"{u} left in RESIZE_REVERTING" for u in reverting]
            report.recovery += self._recovery(s, migs)
        report.violations += allocation_violations(self.db)
        report.violations += journal_violations(self.db)
        report.violations += port_violations(self.db)
        report.violations += self.usage_violations()
        report.violations += self.orphans()
        report.struck = self.struck()

    def _settled(self, migs: list[int]) -> bool:
        with self.db.snapshot() as s:
            statuses = s.scalars(select(Migration.status).where(Migration.id.in_(migs))).all()
            return all(st in ENDED for st in statuses) and all(self._flow_over(s, m) for m in migs)

    @staticmethod
    def _flow_over(s: Any, mig_id: int) -> bool:
        busy = s.scalars(
            select(StepJournal.id)
            .join(Migration, Migration.id == StepJournal.migration_id)
            .where(
                StepJournal.migration_id == mig_id,
                StepJournal.status.in_(
                    [JournalStatus.PENDING, JournalStatus.RUNNING, JournalStatus.RETRYING]
                ),
                Migration.status != MigrationStatus.ERROR,
            )
        ).first()
        return busy is None

    def _recovery(self, s: Any, migs: list[int]) -> list[float]:
        """For each fault, seconds until the workflows in flight at that moment ended."""
        out = []
        for fault in self.faults:
            ends = s.execute(
                select(StepJournal.migration_id, StepJournal.finished_at).where(
                    StepJournal.migration_id.in_(migs)
                )
            ).all()
            last: dict[int, dt.datetime] = {}
            for mig_id, finished in ends:
                if finished is not None:
                    last[mig_id] = max(last.get(mig_id, finished), finished)
            out += [(end - fault.at).total_seconds() for end in last.values() if end > fault.at]
        return out

    def ends_after_return(self, migs: list[int]) -> dict[tuple[int, str], float]:
        """For each workflow (a migration's flow) in flight when a fault struck, the
        seconds from the broken part's return to the workflow's end (0 if before).

        In flight: planned before the return, and not over before the fault.
        """
        firsts: dict[tuple[int, str], dt.datetime] = {}
        ends: dict[tuple[int, str], dt.datetime] = {}
        with self.db.snapshot() as s:
            for mig_id, flow, planned, finished in s.execute(
                select(
                    StepJournal.migration_id,
                    StepJournal.flow,
                    StepJournal.enqueued_at,
                    StepJournal.finished_at,
                ).where(
                    StepJournal.migration_id.in_(migs),
                    StepJournal.status != JournalStatus.SUPERSEDED,
                )
            ):
                key = (mig_id, flow)
                # A re-drive moves its first row's enqueued_at on; the others keep the plan's.
                firsts[key] = min(firsts.get(key, planned), planned)
                if finished is not None:
                    ends[key] = max(ends.get(key, finished), finished)
        out: dict[tuple[int, str], float] = {}
        for fault in self.faults:
            if fault.back_at is None:
                continue
            for key, end in ends.items():
                if firsts[key] < fault.back_at and end > fault.at:
                    out[key] = max(0.0, (end - fault.back_at).total_seconds())
        return out

    def usage_violations(self) -> list[str]:
        return usage_violations(self.db)

    def ask(self, node: str) -> list[dict[str, Any]]:
        """A worker's domains over the broker, through a fresh app each try:
        connections from before a broker restart may hang on to dead sockets."""
        for _ in range(20):
            app = make_app(self.settings)
            try:
                replies = app.control.broadcast(
                    "resizeflow_domains", destination=[node], reply=True, timeout=5
                )
                if replies:
                    return list(replies)
            except Exception:  # the broker is still coming back
                pass
            finally:
                app.close()
            time.sleep(2)
        raise AssertionError(f"{node} does not answer")

    def domains(self, host: str) -> list[dict[str, Any]]:
        return [d for reply in self.ask(self.node(host)) for ds in reply.values() for d in ds]

    def orphans(self) -> list[str]:
        domains = {host: self.domains(host) for host in HOSTS}
        return orphan_violations(self.db, self.settings, domains)


def summary(reports: list[Report]) -> str:
    head = [
        "scenario",
        "stack",
        "seed",
        "workflows",
        "faults",
        "struck work in flight",
        "error+fault",
        "stuck/lost",
        "violations",
        "recovery p50",
        "recovery p99",
    ]
    rows = [head, *[r.row() for r in reports]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in rows
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
