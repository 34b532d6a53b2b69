"""A model-based run: every operation, interleaved with faults, judged by a model.

A seeded driver picks, one at a time, an operation of the service layer the
API calls (boot, resize, cold migrate, confirm, revert, stop, start, hard and
soft reboot, reset-state, the console log, delete, and the operator's abort
and retry of a workflow) on a random server, or a fault: a worker SIGKILLed
and restarted, a host's worker down for a while, the broker restarted without
its data, the database restarted, a spell of transient (and a few final) step
failures. It runs on a :class:`~tests.support.chaos.ChaosStack`: real workers
per host, beat, a database and a broker of the run's own.

The model judges each answer by Nova's rules for the server's state (see
:data:`RULES`). The engine is asynchronous, so it judges strictly only a
server at rest (no task, nothing of it in flight): there the answer must be
the one the rules give, and a refusal must change nothing. A server in the
middle of a workflow may accept or refuse (409), as its state moves on under
the request; anything else (a 500, a 404 of a server not deleted) is wrong
in any state. A fault may make a host's service down: a refusal that says so
(409) is right for a request that needs that host, for a while after.

When the faults stop and the stack is quiet, every resize still awaiting
confirmation is confirmed, and every invariant is checked: no server left in
a task state, every migration ended, each step's work applied once, usage
equal to the servers' allocations, ports bound where their servers are, no
domain or ``_resize`` directory on a host its server is not on, and no journal
row left open.

A failed run prints its seed, which replays the same choices
(``RESIZEFLOW_SOAK_SEED``), and the shortest part of the sequence that shows
the failure: the operations on the server the failure names, with the faults
among them. It is cut from the run, not re-run smaller: what was in flight at
each point depends on timing, which no replay reproduces exactly.

The run drives a :class:`Target`: a chaos stack (``tests/chaos/test_model.py``)
or the vm tier's stack of real guests (``tests/vm/test_vm_model.py``), whose
own invariants include what the guests report.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import sqlalchemy.exc
from sqlalchemy import select

from resizeflow import errors
from resizeflow.compute.api import ComputeAPI
from resizeflow.compute.policy import RequestContext
from resizeflow.compute.workflow_admin import WorkflowAdmin
from resizeflow.conf import Settings
from resizeflow.db.models import Instance, Migration, StepJournal, utcnow
from resizeflow.db.session import Database
from resizeflow.flows import FLOWS
from resizeflow.periodic import confirm_unconfirmed_resizes
from resizeflow.states import JournalStatus, MigrationStatus, VmState
from tests.support.chaos import (
    BROKER_LOST,
    DATABASE_RESTART,
    ENDED,
    HOST_DOWN,
    SIGKILL,
    STEP_FAILURES,
)
from tests.support.invariants import allocation_violations, journal_violations, port_violations

A, S, R, E = VmState.ACTIVE, VmState.STOPPED, VmState.RESIZED, VmState.ERROR
# Nova's rules for a server at rest: the vm_states in which each operation is
# accepted (compute/api.py's check_instance_state); in any other it is refused
# with 409. Delete and reset-state are accepted in every state.
RULES: dict[str, frozenset[VmState] | None] = {
    "resize": frozenset({A, S}),
    "migrate": frozenset({A, S}),
    "confirm": frozenset({R}),
    "revert": frozenset({R}),
    "stop": frozenset({A, E}),
    "start": frozenset({S}),
    "reboot_soft": frozenset({A}),
    "reboot_hard": frozenset({A, S, E}),
    "console": frozenset({A, S, R, E}),
    "reset_state": None,
    "delete": None,
}
# Operations that ask a host (its service must be up): a refusal for a host
# that a fault took down is right.
NEEDS_HOST = {"confirm", "revert", "console", "resize", "migrate", "abort"}
OPEN = (JournalStatus.PENDING, JournalStatus.RUNNING, JournalStatus.RETRYING)
# How long after a worker fault its host may still be refused as down.
HOST_FAULT_WINDOW = 30.0


class Target(Protocol):
    """What a run drives: a stack of real workers per host, beat, a database and
    a broker, with the faults it can suffer and the invariants of its own."""

    api: ComputeAPI
    db: Database
    settings: Settings
    app: Any
    hosts: tuple[str, ...]
    project: str
    # Two flavors a server is resized back and forth between (flavorids): the
    # same disk, so that neither resize shrinks one.
    flavors: tuple[str, str]
    # Those of tests.support.chaos's fault kinds that the target can suffer.
    fault_kinds: tuple[str, ...]

    def start_worker(self, host: str) -> Any: ...
    def kill_worker(self, host: str) -> None: ...
    def domains(self, host: str) -> list[dict[str, Any]]:
        """The domains ``host``'s worker has defined (``uuid`` among their keys)."""

    def set_failpoints(self, table: dict[str, list[dict[str, Any]]]) -> None: ...
    def restart_broker_losing_data(self) -> None: ...
    def restart_postgres(self) -> None: ...

    def observe(self, uuid: str) -> None:
        """Called after each operation on ``uuid``: what the target wants to see
        of the server while the run goes on."""

    def invariant_violations(self, servers: list[str]) -> list[str]:
        """The target's own checks at rest; ``servers``: every server the run
        booted, deleted ones included."""


@dataclass
class Event:
    """One line of the run: an operation and its answer, or a fault."""

    n: int
    what: str
    server: str | None
    answer: str
    verdict: str = "ok"  # or what was wrong

    def __str__(self) -> str:
        who = f" {self.server[:8]}" if self.server else ""
        bad = "" if self.verdict == "ok" else f"  <-- {self.verdict}"
        return f"#{self.n:<4} {self.what}{who}: {self.answer}{bad}"


@dataclass
class Figures:
    seed: int
    operations: Counter[str] = field(default_factory=Counter)
    accepted: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    violations: list[str] = field(default_factory=list)

    def summary(self) -> str:
        ops = ", ".join(
            f"{k} {n} ({self.accepted[k]} accepted)" for k, n in sorted(self.operations.items())
        )
        faults = ", ".join(f"{k} {n}" for k, n in sorted(self.faults.items())) or "none"
        return (
            f"seed {self.seed}: {sum(self.operations.values())} operations in "
            f"{self.seconds / 60:.1f} min; {ops}; faults: {faults}; "
            f"violations: {len(self.violations)}"
        )


@dataclass(frozen=True)
class State:
    vm_state: VmState | None  # None: deleted
    task_state: Any
    busy: bool  # a task, or steps of it in flight
    migrations: tuple[tuple[int, str], ...]

    @property
    def brief(self) -> str:
        if self.vm_state is None:
            return "deleted"
        task = self.task_state.value if self.task_state else "-"
        return f"{self.vm_state.value}/{task}{' busy' if self.busy else ''}"

    @property
    def at_rest(self) -> bool:
        return self.vm_state is not None and not self.busy


class ModelRun:
    """One seeded run of ``operations`` steps against ``stack``."""

    def __init__(
        self,
        stack: Target,
        seed: int,
        operations: int,
        servers: int,
        fault_rate: float = 0.12,
        deadline: float | None = None,
        pause: float = 0.3,
        leave_out: frozenset[str] = frozenset(),
    ) -> None:
        self.stack, self.rng = stack, random.Random(seed)
        self.operations, self.servers, self.fault_rate = operations, servers, fault_rate
        self.figures = Figures(seed)
        self.events: list[Event] = []
        self.live: list[str] = []
        self.booted: list[str] = []
        self.admin = WorkflowAdmin(stack.settings, stack.db, stack.app)
        self.down: dict[str, int] = {}  # host: the step it comes back at
        self.host_faults: dict[str, float] = {}  # host: when a fault last struck it
        self.failing_until = -1
        self.deadline = deadline  # seconds: stop operating then, whatever is left
        # The longest wait between two steps of the run (a random part of it).
        self.pause = pause
        # Operations this run never makes.
        self.leave_out = leave_out

    # -- reading the stack --------------------------------------------------
    def state(self, uuid: str) -> State:
        with self.stack.db.snapshot() as s:
            inst = s.get(Instance, uuid)
            migs = tuple(
                (m.id, m.status.value)
                for m in s.scalars(
                    select(Migration).where(Migration.instance_uuid == uuid).order_by(Migration.id)
                )
            )
            if inst is None or inst.deleted:
                return State(None, None, False, migs)
            in_flight = s.scalars(
                select(StepJournal.id)
                .outerjoin(Migration, Migration.id == StepJournal.migration_id)
                .where(
                    StepJournal.instance_uuid == uuid,
                    StepJournal.status.in_(OPEN),
                    # An errored migration's steps not run stay pending: not in flight.
                    (Migration.id.is_(None)) | (Migration.status != MigrationStatus.ERROR),
                )
                .limit(1)
            ).first()
            unsettled = any(
                st not in {m.value for m in ENDED} | {MigrationStatus.FINISHED.value}
                for _, st in migs
            )
            busy = inst.task_state is not None or in_flight is not None or unsettled
            return State(inst.vm_state, inst.task_state, busy, migs)

    def latest_migration(self, uuid: str) -> int | None:
        migs = self.state(uuid).migrations
        return migs[-1][0] if migs else None

    # -- the driver -----------------------------------------------------------
    def user(self) -> RequestContext:
        return RequestContext(user_id="model", project_id=self.stack.project)

    def operator(self) -> RequestContext:
        return RequestContext("admin", self.stack.project, frozenset({"admin", "member", "reader"}))

    def patiently(self, call: Callable[[], Any]) -> Any:
        """A client's retry while the database restarts (the API would answer 503)."""
        for _ in range(90):
            try:
                return call()
            except sqlalchemy.exc.OperationalError:
                time.sleep(0.5)
        return call()

    def run(self) -> Figures:
        started = time.monotonic()
        try:
            for n in range(self.operations):
                if self.deadline is not None and time.monotonic() > started + self.deadline:
                    break
                self._bring_back(n)
                if self.live and self.rng.random() < self.fault_rate:
                    self.fault(n)
                else:
                    self.operate(n)
                time.sleep(self.rng.uniform(0.0, self.pause))
            self.quiesce()
            self.check()
        finally:
            self.figures.seconds = time.monotonic() - started
        return self.figures

    def _bring_back(self, n: int) -> None:
        for host, at in list(self.down.items()):
            if n >= at:
                self.stack.start_worker(host)
                self.host_faults[host] = time.monotonic()
                del self.down[host]
                self.events.append(Event(n, "host back", None, host))
        if 0 <= self.failing_until <= n:
            self.stack.set_failpoints({})
            self.failing_until = -1
            self.events.append(Event(n, "step failures end", None, ""))

    # -- faults ---------------------------------------------------------------
    def fault(self, n: int) -> None:
        kind = self.rng.choice(self.stack.fault_kinds)
        up = [h for h in self.stack.hosts if h not in self.down]
        if kind in (SIGKILL, HOST_DOWN) and len(up) < 2:
            kind = STEP_FAILURES  # one host down at a time: the other must serve
        if kind == STEP_FAILURES and self.failing_until >= 0:
            kind = SIGKILL
        self.figures.faults[kind] += 1
        detail = ""
        if kind == SIGKILL:
            host = self.rng.choice(up)
            self.stack.kill_worker(host)
            self.host_faults[host] = time.monotonic()
            time.sleep(self.rng.uniform(0.0, 1.0))
            self.stack.start_worker(host)
            detail = host
        elif kind == HOST_DOWN:
            host = self.rng.choice(up)
            self.stack.kill_worker(host)
            self.host_faults[host] = time.monotonic()
            self.down[host] = n + self.rng.randint(3, 8)
            detail = f"{host} until #{self.down[host]}"
        elif kind == BROKER_LOST:
            self.stack.restart_broker_losing_data()
        elif kind == DATABASE_RESTART:
            self.stack.restart_postgres()
        else:
            steps = {
                step: [
                    {"mode": "fatal", "probability": 0.03},
                    {"mode": "transient", "probability": 0.3},
                ]
                for step in _migration_and_operation_steps()
            }
            self.stack.set_failpoints(steps)
            self.failing_until = n + self.rng.randint(3, 10)
            detail = f"until #{self.failing_until}"
        self.events.append(Event(n, f"FAULT {kind}", None, detail))

    # -- operations -------------------------------------------------------------
    def operate(self, n: int) -> None:
        if len(self.live) < self.servers and (not self.live or self.rng.random() < 0.15):
            self.boot(n)
            return
        uuid = self.rng.choice(self.live)
        before = self.state(uuid)
        op = self._choose(before)
        self.figures.operations[op] += 1
        # What the rules say, read before the call: the call changes what they read.
        expected = self.expected(op, uuid, before)
        answer, exc = self._call(op, uuid)
        after = self.state(uuid)
        if exc is None:
            self.figures.accepted[op] += 1
        verdict = self.judge(op, uuid, expected, before, after, exc)
        if op == "delete" and exc is None:
            self.live.remove(uuid)
        self.stack.observe(uuid)
        event = Event(n, op, uuid, f"{answer} [was {before.brief}]", verdict)
        self.events.append(event)
        if verdict != "ok":
            self.figures.violations.append(f"{event}")

    def _choose(self, st: State) -> str:
        # Mostly what the server's state allows, sometimes anything: both answers count.
        ops = [op for op in (*RULES, "abort", "retry") if op not in self.leave_out]
        if self.rng.random() < 0.35 or st.vm_state is None:
            return self.rng.choice(ops)
        allowed = [op for op, states in RULES.items() if states and st.vm_state in states]
        if st.migrations and st.migrations[-1][1] == MigrationStatus.ERROR.value:
            allowed += ["abort", "retry", "reset_state"]
        if st.vm_state == E:
            allowed += ["reset_state", "delete"]
        allowed = [op for op in allowed if op not in self.leave_out]
        if not allowed:  # building, say: anything, the model judges it
            return self.rng.choice(ops)
        weights = [0.3 if op in ("delete", "console") else 1.0 for op in allowed]
        return self.rng.choices(allowed, weights)[0]

    def boot(self, n: int) -> None:
        self.figures.operations["boot"] += 1
        try:
            uuid = self.patiently(
                lambda: self.stack.api.create(
                    self.user(), name=f"m{n}", flavor_ref=self.stack.flavors[0]
                )
            )
        except errors.ResizeflowError as exc:
            self.events.append(Event(n, "boot", None, f"{exc.code} {exc.message}"))
            if exc.code >= 500 and not isinstance(exc, errors.NoValidHost):
                self.figures.violations.append(f"boot answered {exc.code} {exc.message}")
            return
        self.figures.accepted["boot"] += 1
        self.live.append(uuid)
        self.booted.append(uuid)
        self.events.append(Event(n, "boot", uuid, "202"))

    def _call(self, op: str, uuid: str) -> tuple[str, errors.ResizeflowError | Exception | None]:
        api, user = self.stack.api, self.user()
        calls: dict[str, Callable[[], Any]] = {
            "resize": lambda: api.resize(user, uuid, self.other_flavor(uuid)),
            "migrate": lambda: api.migrate(self.operator(), uuid),
            "confirm": lambda: api.confirm_resize(user, uuid),
            "revert": lambda: api.revert_resize(user, uuid),
            "stop": lambda: api.stop(user, uuid),
            "start": lambda: api.start(user, uuid),
            "reboot_soft": lambda: api.reboot(user, uuid, "SOFT"),
            "reboot_hard": lambda: api.reboot(user, uuid, "HARD"),
            "console": lambda: api.console_output(user, uuid, 10),
            "reset_state": lambda: api.reset_state(self.operator(), uuid, VmState.ACTIVE),
            "delete": lambda: api.delete(user, uuid),
            "abort": lambda: self._on_migration(uuid, self.admin.abort),
            "retry": lambda: self._on_migration(uuid, self.admin.retry),
        }
        try:
            self.patiently(calls[op])
        except errors.ResizeflowError as exc:
            return f"{exc.code} {type(exc).__name__}: {exc.message}", exc
        except Exception as exc:  # what the API would answer 500 for
            return f"500 {type(exc).__name__}: {exc}", exc
        return "accepted", None

    def _on_migration(self, uuid: str, verb: Callable[[RequestContext, int], Any]) -> Any:
        mig = self.latest_migration(uuid)
        if mig is None:
            raise errors.WorkflowNotFailed(migration_id=0, status="none", verb="touched")
        return verb(self.operator(), mig)

    def other_flavor(self, uuid: str) -> str:
        first, second = self.stack.flavors
        with self.stack.db.snapshot() as s:
            inst = s.get(Instance, uuid)
            return second if inst is None or inst.flavor["flavorid"] == first else first

    # -- the model ----------------------------------------------------------------
    def host_troubled(self) -> bool:
        recent = [t for t in self.host_faults.values() if time.monotonic() - t < HOST_FAULT_WINDOW]
        return bool(self.down) or bool(recent)

    def judge(
        self,
        op: str,
        uuid: str,
        expected: bool,
        before: State,
        after: State,
        exc: Exception | None,
    ) -> str:
        """Whether the answer was right; ``expected``: whether the rules accept
        ``op`` in the state ``before``."""
        code = exc.code if isinstance(exc, errors.ResizeflowError) else (500 if exc else 0)
        if code >= 500 and not (isinstance(exc, errors.NoValidHost) and self.host_troubled()):
            return f"answered {code}"
        refusals = {400, 409}
        if op == "console" and not before.at_rest:
            # In the middle of a move the host asked may no longer have the
            # guest: Nova's console answers 404 then too.
            refusals.add(404)
        if op == "console" and code == 404 and not self._has_guest(uuid):
            # Its host has no guest for it (a failed move, then an operator
            # declared a state the host does not have): Nova's console answers
            # 404 then too.
            return "ok"
        if code == 404 and code not in refusals:
            return "404 for a server that was not deleted"
        if exc is not None and code not in refusals and not isinstance(exc, errors.NoValidHost):
            return f"answered {code}"
        if not before.at_rest:
            return "ok"  # in flight: accepted or refused, as its state moves on
        troubled = isinstance(exc, errors.ServiceUnavailable | errors.NoValidHost) and (
            op in NEEDS_HOST and self.host_troubled()
        )
        if expected and exc is not None and not troubled:
            return f"refused in {before.vm_state.value if before.vm_state else '-'} at rest"
        if not expected and exc is None:
            return f"accepted in {before.vm_state.value if before.vm_state else '-'} at rest"
        if exc is not None and after != before:
            return f"a refusal changed the server: {before} -> {after}"
        return "ok"

    def _has_guest(self, uuid: str) -> bool:
        with self.stack.db.snapshot() as s:
            inst = s.get(Instance, uuid)
            host = inst.host if inst is not None else None
        return host is not None and uuid in {d["uuid"] for d in self.stack.domains(host)}

    def expected(self, op: str, uuid: str, st: State) -> bool:
        if op in RULES:
            states = RULES[op]
            return states is None or (st.vm_state in states)
        last = st.migrations[-1][1] if st.migrations else None
        if op == "retry":
            return last == MigrationStatus.ERROR.value and self._restorable(uuid)
        # abort: a workflow that failed (or stalled) and is not over yet.
        return last == MigrationStatus.ERROR.value and self._abortable(uuid)

    def _restorable(self, uuid: str) -> bool:
        mig = self.latest_migration(uuid)
        with self.stack.db.snapshot() as s:
            rows = s.scalars(
                select(StepJournal).where(
                    StepJournal.migration_id == mig, StepJournal.status == JournalStatus.FAILED
                )
            ).all()
            return any(r.restore for r in rows)

    def _abortable(self, uuid: str) -> bool:
        mig = self.latest_migration(uuid)
        with self.stack.db.snapshot() as s:
            rows = s.scalars(
                select(StepJournal).where(
                    StepJournal.migration_id == mig,
                    StepJournal.status.not_in([JournalStatus.SUPERSEDED]),
                )
            ).all()
            first = next((r for r in rows if r.status != JournalStatus.DONE), None)
            if first is None:
                return False
            return not (
                first.status == JournalStatus.ABORTED
                or (first.status == JournalStatus.FAILED and not first.restore)
            )

    # -- the end ------------------------------------------------------------------
    def quiesce(self, timeout: float = 240.0) -> None:
        """Faults off, every host back; wait for rest; confirm what awaits it."""
        self.stack.set_failpoints({})
        for host in list(self.down):
            self.stack.start_worker(host)
            del self.down[host]
        self._wait_rest(timeout)
        # Nova's periodic task, as if the confirm window had passed: it confirms
        # what awaits confirmation and errors out a finished migration whose
        # server is no longer RESIZED (an operator reset it).
        future = utcnow().replace(year=utcnow().year + 1)
        swept = self.patiently(lambda: confirm_unconfirmed_resizes(self.stack.api, 1, now=future))
        self.events.append(Event(len(self.events), "auto-confirm (at the end)", None, str(swept)))
        self._wait_rest(timeout)

    def _wait_rest(self, timeout: float) -> None:
        """Until every server is at rest and nothing is in flight, deletes included."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(not self.state(u).busy for u in self.live) and not self._open_rows():
                return
            time.sleep(1.0)

    def _open_rows(self) -> list[StepJournal]:
        """Journal rows not closed, but those an errored migration left unrun."""
        with self.stack.db.snapshot() as s:
            return list(
                s.scalars(
                    select(StepJournal)
                    .outerjoin(Migration, Migration.id == StepJournal.migration_id)
                    .where(
                        StepJournal.instance_uuid.in_(self.booted),
                        StepJournal.status.in_(OPEN),
                        (Migration.id.is_(None)) | (Migration.status != MigrationStatus.ERROR),
                    )
                )
            )

    def check(self) -> None:
        v = self.figures.violations
        stack = self.stack
        for uuid in self.live:
            st = self.state(uuid)
            if st.busy:
                v.append(f"{uuid} stuck: {st}")
        with stack.db.snapshot() as s:
            for mig in s.scalars(select(Migration).where(Migration.instance_uuid.in_(self.booted))):
                if mig.status not in ENDED:
                    v.append(
                        f"migration {mig.id} of {mig.instance_uuid} not ended: {mig.status.value}"
                    )
        for row in self._open_rows():
            state = f"{row.step} {row.status.value}"
            v.append(f"journal row {row.id} of {row.instance_uuid} open: {state}")
        v += allocation_violations(stack.db)
        v += journal_violations(stack.db)
        v += port_violations(stack.db)
        v += stack.invariant_violations(self.booted)

    def shortest(self, violation: str) -> list[Event]:
        """The part of the run that shows ``violation``: the operations on the server
        it names (every event if it names none), with the faults among them, up to
        the wrong answer if it was one."""
        servers = sorted({e.server for e in self.events if e.server})
        # An event names its server by its first 8 characters, an invariant by its uuid.
        named = next((u for u in servers if u[:8] in violation), None)
        last = next((e.n for e in self.events if e.verdict != "ok" and str(e) in violation), None)
        picked = [
            e
            for e in self.events
            if (named is None or e.server in (named, None)) and (last is None or e.n <= last)
        ]
        return picked

    def failure_report(self) -> str:
        lines = [
            f"model-based run failed: replay with RESIZEFLOW_SOAK_SEED={self.figures.seed}",
            self.figures.summary(),
        ]
        for violation in self.figures.violations[:5]:
            lines.append(f"- {violation}")
            lines += [f"    {e}" for e in self.shortest(violation)]
        return "\n".join(lines)


def _migration_and_operation_steps() -> list[str]:
    return sorted({step.task for flow in FLOWS.values() for step in flow.steps})
