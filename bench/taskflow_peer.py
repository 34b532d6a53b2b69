"""The peer: the same confirm and revert flows on OpenStack TaskFlow's worker-based engine.

Same stack as resizeflow's throughput and latency phases: the same
PostgreSQL database and servers, the same broker (the bench's private Redis,
under a key prefix of TaskFlow's own), the same worker processes, the same
virt driver and the same step functions (see :mod:`bench.taskflow_step` and
:mod:`bench.taskflow_worker`). Only the engine differs:

- A request goes through the same service-layer call (``ComputeAPI``:
  validation, state changes, the action record, the journal plan, one
  commit). Where resizeflow then sends a Celery chain, :class:`PeerAPI`
  hands the planned steps to a TaskFlow engine running in a thread of the
  bench process, a linear flow of one task per step, each routed to the
  worker of the step's host.
- TaskFlow's persistence is its SQLAlchemy backend on a PostgreSQL database
  of its own, created and dropped by the bench, on the same server.
- Every engine shares one ``WorkerTaskExecutor``, started once, as a
  conductor process would keep one. An engine builds and starts its own by
  default, which would add a reply queue, a consumer thread and a worker
  discovery round to every workflow; the shared one is TaskFlow's better
  case.

A workflow starts at the API call and ends at its last step's ``finished_at``
in the journal, written by the worker in the step's commit: the same clock
and the same end as resizeflow's. The engine's own bookkeeping after that
commit (saving the last result, the flow's SUCCESS) is not in the figure.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import taskflow.engines
from sqlalchemy import func, select
from taskflow.engines.worker_based.executor import WorkerTaskExecutor
from taskflow.persistence import backends as tf_backends
from taskflow.utils import persistence_utils

from bench import drive
from bench.phases import THROUGHPUT_ROUNDS, Log, pct, rates
from bench.stack import BenchStack
from bench.taskflow_tasks import EXCHANGE, Wire, build_flow
from resizeflow import flows
from resizeflow.compute.api import ComputeAPI
from resizeflow.compute.launching import Launch
from resizeflow.db.models import Migration
from resizeflow.db.scratch import create_database, drop_database
from resizeflow.states import MigrationStatus

log = logging.getLogger(__name__)

# Flavors of the latency samples: up from where the throughput rounds left
# them (at most m1.medium), so that every resize grows the disk.
LATENCY_FLAVORS = (("4", "confirm"), ("5", "revert"))
FINAL = {"confirm": MigrationStatus.CONFIRMED, "revert": MigrationStatus.REVERTED}


class SharedExecutor(WorkerTaskExecutor):  # type: ignore[misc]
    """A worker executor that many engines share; the bench opens and closes it.

    An engine starts its executor when it runs and stops it when it ends, and
    stopping fails every request still in flight: with one executor for all,
    those calls must not reach it.
    """

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def open(self, workers: int, timeout: float) -> None:
        super().start()
        missing = self.wait_for_workers(workers=workers, timeout=timeout)
        if missing:
            super().stop()
            raise TimeoutError(f"{missing} of {workers} TaskFlow workers never answered")

    def close(self) -> None:
        super().stop()


class Peer:
    """Runs each launched workflow on a TaskFlow engine, one thread per workflow."""

    def __init__(self, st: BenchStack, backend: Any, executor: SharedExecutor) -> None:
        self.backend, self.executor = backend, executor
        self.threads: list[threading.Thread] = []
        self.failed: list[str] = []
        self.st = st
        self.api = PeerAPI(st.api, self)

    def launch(self, item: Launch) -> None:
        thread = threading.Thread(target=self._run, args=(item,), daemon=True)
        self.threads.append(thread)
        thread.start()

    def _run(self, item: Launch) -> None:
        name = flows.flow_of(item.steps[0].step).name
        flow = build_flow(name, int(item.subject), [(s.step, s.host) for s in item.steps])
        try:
            # A logbook per workflow, as TaskFlow makes one when given none.
            book, detail = persistence_utils.temporary_flow_detail(self.backend)
            engine = taskflow.engines.load(
                flow,
                flow_detail=detail,
                book=book,
                store={"migration_id": int(item.subject)},
                engine="worker-based",
                backend=self.backend,
                executor=self.executor,
            )
            engine.run()
        except Exception as exc:  # counted, and the batch goes on
            log.warning("TaskFlow %s of migration %s failed: %s", name, item.subject, exc)
            self.failed.append(f"{name} {item.subject}: {exc}")

    def join(self, timeout: float) -> int:
        """Wait for every engine launched so far; returns how many failed."""
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                raise TimeoutError(f"a TaskFlow engine still runs after {timeout:.0f}s")
        self.threads.clear()
        failed, self.failed = len(self.failed), []
        return failed

    def finish(self, uuids: Sequence[str], flow: str, timeout: float) -> drive.Batch:
        """Confirm (or revert) every server at once and wait for all, as :func:`drive.finish`."""
        call = self.api.confirm_resize if flow == "confirm" else self.api.revert_resize
        started: dict[int, float] = {}
        for u in uuids:
            t = time.time()
            started[call(drive.caller(), u)] = t
        failed = self.join(timeout)
        batch = drive.collect(self.st, flow, started)
        # An engine that succeeded is TaskFlow's word; the migration confirmed
        # or reverted is the steps' own effect, checked too.
        with self.st.db.snapshot() as s:
            unfinished = s.scalar(
                select(func.count())
                .select_from(Migration)
                .where(Migration.id.in_(list(started)), Migration.status != FINAL[flow])
            )
        batch.errors = max(failed, int(unfinished or 0))
        return batch


class PeerAPI(ComputeAPI):
    """resizeflow's service layer, with TaskFlow launching what it planned."""

    def __init__(self, base: ComputeAPI, peer: Peer) -> None:
        super().__init__(base.settings, base.db, base.app)
        self.peer = peer

    def _send(self, item: Launch) -> None:
        if item.then is not None or item.cleanup is not None:
            raise NotImplementedError("the peer runs confirm and revert only")
        self.peer.launch(item)


@contextlib.contextmanager
def persistence(pg_admin_url: str, timeout: float = 900.0) -> Iterator[Any]:
    """TaskFlow's SQLAlchemy persistence on a scratch PostgreSQL database, its schema made."""
    url = create_database(pg_admin_url, "rfb_taskflow")
    backend = None
    try:
        # A caller waiting for a pooled connection is slow, not failed: 200
        # engines at once share the default pool (5, and 10 more).
        backend = tf_backends.fetch({"connection": url, "pool_timeout": int(timeout)})
        with contextlib.closing(backend.get_connection()) as conn:
            conn.upgrade()
        yield backend
    finally:
        if backend is not None:
            backend.close()
        drop_database(pg_admin_url, url)


@contextlib.contextmanager
def executor(st: BenchStack, timeout: float = 60.0) -> Iterator[SharedExecutor]:
    wire = Wire.of(st.settings)
    ex = SharedExecutor(
        uuid=f"bench-engine-{uuid.uuid4().hex[:8]}",
        exchange=EXCHANGE,
        topics=list(st.hosts),
        url=wire.url,
        transport_options=wire.transport_options,
    )
    ex.open(len(st.hosts), timeout)
    try:
        yield ex
    finally:
        ex.close()


def _latency(
    st: BenchStack, peer: Peer, servers: list[str], timeout: float, log: Log
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for flavor, flow in LATENCY_FLAVORS:
        log(f"TaskFlow latency: {len(servers)} single {flow}s")
        drive.resize_all(st, servers, flavor, timeout)  # setup: resizeflow's chains
        lat: list[float] = []
        for u in servers:
            batch = peer.finish([u], flow, timeout)
            if batch.errors:
                raise RuntimeError(f"a TaskFlow {flow} failed: see the log above")
            lat += batch.latencies()
        out[flow] = {
            "latency_n": len(lat),
            "p50_ms": round(1000 * statistics.median(lat), 1),
            "p95_ms": round(1000 * pct(lat, 95), 1),
            "p99_ms": round(1000 * pct(lat, 99), 1),
        }
    return out


def peer_phase(
    st: BenchStack, n: int, samples: int, pg_admin_url: str, timeout: float, log: Log
) -> dict[str, Any]:
    """Throughput, ``n`` at once, on both engines; then TaskFlow's latency, one at a time.

    Each engine gets ``n`` servers of its own, booted together and resized
    alike, and the two batches of a flow run back to back, resizeflow's
    first: both sides of the ratio see the same N, the same database and
    nearly the same moment of a shared machine. One round: TaskFlow is the
    slow side, and this phase has to fit the default run.
    """
    with persistence(pg_admin_url, timeout) as backend, executor(st) as ex:
        peer = Peer(st, backend, ex)
        ours = drive.create_servers(st, n, timeout)
        theirs = drive.create_servers(st, max(n, samples), timeout)
        out: dict[str, Any] = {}
        for flavor, flow in THROUGHPUT_ROUNDS[0]:
            steps = drive.STEPS[flow]
            log(f"peer: {n} {flow}s at once on resizeflow, then {n} on TaskFlow")
            drive.resize_all(st, ours, flavor, timeout)
            mine = rates(drive.finish(st, ours, flow, timeout), steps)
            drive.resize_all(st, theirs[:n], flavor, timeout)
            out[flow] = {
                **rates(peer.finish(theirs[:n], flow, timeout), steps),
                "resizeflow_workflows_per_s": mine["workflows_per_s"],
                "resizeflow_errors": mine["errors"],
            }
        for flow, lat in _latency(st, peer, theirs[:samples], timeout, log).items():
            out[flow].update(lat)
    return out


def ratios(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """resizeflow ÷ TaskFlow: throughput (higher is better), p50 and p99 (lower is better).

    Throughput compares the peer phase's own batches (same N, back to back);
    latency compares the latency phase's samples with TaskFlow's.
    """
    peer, lat = results.get("taskflow", {}), results.get("latency", {})
    out: dict[str, dict[str, float]] = {}
    for flow in ("confirm", "revert"):
        if flow not in peer or flow not in lat:
            continue
        p = peer[flow]
        out[flow] = {
            "throughput": round(p["resizeflow_workflows_per_s"] / p["workflows_per_s"], 2),
            "p50": round(lat[flow]["p50_ms"] / p["p50_ms"], 2),
            "p99": round(lat[flow]["p99_ms"] / p["p99_ms"], 2),
        }
    return out
