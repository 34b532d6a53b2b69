"""Drive workflows through the service layer and read their timings back from the journal.

Every call gets a fresh :class:`RequestContext` (each carries its own request
id). A workflow starts when the bench calls the API and ends when its last
step's journal row says ``finished_at``, written by the worker; the baseline's
chains end when their last task runs, also by the worker's clock.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid as uuidlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from celery import chain
from sqlalchemy import func, select

from bench import noop
from bench.stack import BenchStack
from resizeflow import routing
from resizeflow.compute.policy import RequestContext
from resizeflow.db.models import Instance, Migration, StepJournal
from resizeflow.states import JournalStatus, MigrationStatus, VmState

STEPS = {"confirm": 4, "revert": 5, "resize": 3}


def caller() -> RequestContext:
    return RequestContext(user_id="bench", project_id="bench", roles=frozenset({"admin", "member"}))


def epoch(stamp: dt.datetime) -> float:
    """A journal timestamp (naive UTC) as seconds since the epoch."""
    return stamp.replace(tzinfo=dt.UTC).timestamp()


def wait_for(what: str, ready: Callable[[], bool], timeout: float, poll: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(poll)


def create_servers(st: BenchStack, n: int, timeout: float) -> list[str]:
    """Boot ``n`` m1.tiny servers, server k on host k mod H, and wait until all are ACTIVE."""
    hosts = st.hosts
    uuids = [
        st.api.create(caller(), name=f"b{k}", flavor_ref="1", host=hosts[k % len(hosts)])
        for k in range(n)
    ]

    def ready() -> bool:
        with st.db.snapshot() as s:
            states = s.execute(
                select(Instance.vm_state, Instance.task_state).where(Instance.uuid.in_(uuids))
            ).all()
        if failed := sum(vm == VmState.ERROR for vm, _ in states):
            raise RuntimeError(f"{failed} servers went to ERROR while booting")
        return sum(vm == VmState.ACTIVE and task is None for vm, task in states) == n

    wait_for(f"{n} servers to boot", ready, timeout)
    return uuids


def pending_steps(st: BenchStack, ids: Sequence[int], flow: str) -> int:
    """Journal rows of ``flow`` not done yet, for migrations that have not errored.

    NOTE: the bench only waits for the newest migrations, all created together,
    so an id range finds them; an ``IN`` list of thousands of ids, polled, would
    load PostgreSQL more as N grows and skew the scaling figures it measures.
    """
    with st.db.snapshot() as s:
        return int(
            s.scalar(
                select(func.count())
                .select_from(StepJournal)
                .join(Migration, Migration.id == StepJournal.migration_id)
                .where(
                    StepJournal.migration_id.between(min(ids), max(ids)),
                    StepJournal.flow == flow,
                    StepJournal.status != JournalStatus.DONE,
                    Migration.status != MigrationStatus.ERROR,
                )
            )
            or 0
        )


def wait_flow(
    st: BenchStack, ids: Sequence[int], flow: str, timeout: float, poll: float = 0.1
) -> None:
    """Wait until every workflow of ``ids`` has finished; big batches are polled less often."""
    if not ids:
        return
    poll = min(1.0, max(poll, len(ids) / 2000))
    wait_for(
        f"{len(ids)} {flow} workflows", lambda: pending_steps(st, ids, flow) == 0, timeout, poll
    )


def resize_all(st: BenchStack, uuids: Sequence[str], flavor: str, timeout: float) -> dict[str, int]:
    """Resize server k from host k mod H to the next host; wait until each awaits confirmation.

    NOTE: prep_resize locks the source node's row, then the dest's. Resizes
    that cross in opposite directions at once deadlock on PostgreSQL, so
    setup runs in two waves, each locking nodes in one global order: first
    every resize towards a later host, then every resize towards an earlier
    one (a finding this bench reports, not something it measures).
    """
    with st.db.snapshot() as s:
        where = {u: h for u, h in s.execute(select(Instance.uuid, Instance.host))}
    hosts = st.hosts
    dest = {u: hosts[(hosts.index(str(where[u])) + 1) % len(hosts)] for u in uuids}
    migs: dict[str, int] = {}
    for forward in (True, False):
        wave = [u for u in uuids if (hosts.index(str(where[u])) < hosts.index(dest[u])) == forward]
        for u in wave:
            migs[u] = st.api.resize(caller(), u, flavor, host=dest[u])
        wait_flow(st, [migs[u] for u in wave], "resize", timeout)
    return migs


@dataclass
class Batch:
    """Workflows started together: when each was requested, and what its journal says."""

    flow: str
    started: dict[int, float]  # migration id -> bench clock at the API call
    ended: dict[int, float]  # migration id -> finished_at of the last step
    errors: int

    @property
    def wall(self) -> float:
        return max(self.ended.values()) - min(self.started.values())

    def latencies(self) -> list[float]:
        return [self.ended[m] - self.started[m] for m in self.ended]


def finish(
    st: BenchStack, uuids: Sequence[str], flow: str, timeout: float, poll: float = 0.1
) -> Batch:
    """Confirm (or revert) every server at once and wait for all of them."""
    call = st.api.confirm_resize if flow == "confirm" else st.api.revert_resize
    started: dict[int, float] = {}
    for u in uuids:
        t = time.time()
        started[call(caller(), u)] = t
    wait_flow(st, list(started), flow, timeout, poll)
    return collect(st, flow, started)


def collect(st: BenchStack, flow: str, started: dict[int, float]) -> Batch:
    ended: dict[int, float] = {}
    with st.db.snapshot() as s:
        rows = s.execute(
            select(StepJournal.migration_id, func.max(StepJournal.finished_at))
            .where(StepJournal.migration_id.in_(list(started)), StepJournal.flow == flow)
            .group_by(StepJournal.migration_id)
        ).all()
        errors = s.scalar(
            select(func.count())
            .select_from(Migration)
            .where(Migration.id.in_(list(started)), Migration.status == MigrationStatus.ERROR)
        )
    for mig_id, last in rows:
        if last is not None and mig_id is not None:
            ended[mig_id] = epoch(last)
    return Batch(flow=flow, started=started, ended=ended, errors=int(errors or 0))


def step_rows(st: BenchStack, ids: Sequence[int], flow: str) -> list[StepJournal]:
    with st.db.snapshot() as s:
        return list(
            s.scalars(
                select(StepJournal)
                .where(StepJournal.migration_id.in_(list(ids)), StepJournal.flow == flow)
                .order_by(StepJournal.migration_id, StepJournal.position)
            )
        )


# -- the baseline ---------------------------------------------------------------


def bare_chain(st: BenchStack, length: int, token: str, hosts: Sequence[str]) -> None:
    """Send a chain of ``length`` no-op tasks; step i runs on ``hosts[i]``'s queue."""
    sigs = [
        st.app.signature(
            noop.NOOP if i < length - 1 else noop.NOOP_LAST,
            args=(token,),
            queue=routing.queue_for(hosts[i]),
            immutable=True,
        )
        for i in range(length)
    ]
    chain(*sigs).apply_async()


def chain_hosts(st: BenchStack, length: int, k: int) -> list[str]:
    """The queues a workflow of ``length`` would use: confirm stays on one host,
    revert runs four steps on the dest and the last on the source."""
    src = st.hosts[k % len(st.hosts)]
    dst = st.hosts[(k + 1) % len(st.hosts)]
    return [src] * length if length == 4 else [dst] * (length - 1) + [src]


def bare_batch(st: BenchStack, length: int, n: int, timeout: float) -> Batch:
    """Send ``n`` bare chains at once; wait until all have finished."""
    r = noop.client(st.settings.broker_url)
    key = noop.done_key(st.settings.broker_prefix)
    r.delete(key)
    run = uuidlib.uuid4().hex[:8]
    started: dict[int, float] = {}
    for k in range(n):
        started[k] = time.time()
        bare_chain(st, length, f"{run}-{k}", chain_hosts(st, length, k))
    ended: dict[int, float] = {}
    deadline = time.monotonic() + timeout
    while len(ended) < n:
        item = r.blpop([key], timeout=1)
        if item is not None:
            rec = json.loads(item[1])
            ended[int(rec["token"].rsplit("-", 1)[1])] = float(rec["t"])
        elif time.monotonic() > deadline:
            raise TimeoutError(f"{n - len(ended)} of {n} bare chains did not finish")
    return Batch(flow=f"bare{length}", started=started, ended=ended, errors=0)
