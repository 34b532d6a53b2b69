"""The step runner's delivery, in process, on a real journal (SQLite and PostgreSQL):
where its middleware are called on the path, and what each commit leaves behind.

The step functions are this module's own, put in place of the stop operation's
in a copy of its flow: the delivery, its store and its middleware are the real
ones, and so are the database and the failure path (error-out included).
"""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from celery.exceptions import Retry
from sqlalchemy import select

from resizeflow import errors, flows
from resizeflow.conf import Settings
from resizeflow.db import api as dbapi
from resizeflow.db import journal
from resizeflow.db.migrate import upgrade
from resizeflow.db.models import (
    Instance,
    InstanceAction,
    InstanceActionEvent,
    InstanceFault,
    StepJournal,
)
from resizeflow.db.session import Database
from resizeflow.openstack.base import Notification
from resizeflow.runner.delivery import Delivery
from resizeflow.runner.middleware import Chain, Middleware
from resizeflow.states import JournalStatus, PowerState, TaskState, VmState
from resizeflow.steps.context import (
    HostRuntime,
    HypervisorWork,
    InstanceContext,
    PhasedStep,
    StepContext,
)
from tests.support.stack import PG_ADMIN_URL, create_pg_database, drop_pg_database, require

WORKER = "compute-1@here/100"
STOP = flows.STOP.last
_J = JournalStatus


# -- the steps -------------------------------------------------------------------
def quick_stop(ctx: InstanceContext) -> None:
    ctx.notify("power_off.start")
    ctx.instance.power_state = PowerState.SHUTDOWN
    ctx.instance.vm_state = VmState.STOPPED
    ctx.instance.task_state = None
    ctx.notify("power_off.end")


def phased_stop(ctx: InstanceContext) -> PhasedStep:
    ctx.notify("power_off.start")
    ctx.instance.power_state = yield HypervisorWork("shut down", lambda _: PowerState.SHUTDOWN)
    ctx.instance.vm_state = VmState.STOPPED
    ctx.instance.task_state = None
    ctx.notify("power_off.end")


def refused_stop(ctx: InstanceContext) -> None:
    ctx.notify("power_off.start")
    ctx.instance.vm_state = VmState.STOPPED  # rolled back with the step
    raise errors.StepFailed(step=STOP.task, reason="the driver said no")


def stop_flow(fn: str) -> tuple[flows.Flow, flows.Step]:
    step = dataclasses.replace(STOP, fn=f"tests.functional.test_runner:{fn}")
    return dataclasses.replace(flows.STOP, steps=(step,)), step


# -- what a delivery needs -------------------------------------------------------
class _Task:
    """What the runner asks of a Celery task: its retry count, and retry itself."""

    class request:
        retries = 0

    def retry(self, **kwargs: Any) -> Exception:
        return Retry(exc=kwargs.get("exc"))


class Notes:
    """A notifier that keeps what it was asked to publish."""

    def __init__(self) -> None:
        self.published: list[str] = []

    def publish(self, notes: list[Notification]) -> None:
        self.published += [n.event_type for n in notes]


@pytest.fixture(params=["sqlite", "postgresql"])
def runtime(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HostRuntime]:
    url = ""
    if request.param == "postgresql":
        require(PG_ADMIN_URL, 5432, "PostgreSQL")
        url = create_pg_database()
    settings = Settings(state_dir=tmp_path, host="compute-1", database_url=url)
    database = Database(settings.db_url, pool_pre_ping=False)
    try:
        upgrade(database)
        none = cast(Any, None)  # no virt driver: these steps never reach one
        yield HostRuntime(
            settings=settings, db=database, virt=none, notifier=Notes(), incarnation=WORKER
        )
    finally:
        database.dispose()
        if url:
            drop_pg_database(url)


def stopping(rt: HostRuntime) -> str:
    """A server being stopped: its row, its stop action and its planned step."""
    uid = str(uuid.uuid4())
    with rt.db.transaction() as s:
        s.add(
            Instance(
                uuid=uid,
                project_id="p",
                user_id="u",
                host="compute-1",
                node="compute-1",
                flavor={"vcpus": 1, "memory_mb": 64, "root_gb": 1},
                vm_state=VmState.ACTIVE,
                power_state=PowerState.RUNNING,
                task_state=TaskState.POWERING_OFF,
            )
        )
        s.flush()
        action = dbapi.record_action(
            s, action="stop", instance_uuid=uid, request_id="req-1", user_id="u", project_id="p"
        )
        s.flush()
        journal.plan(
            s,
            "stop",
            [journal.PlannedStep(STOP.task, "compute-1")],
            instance_uuid=uid,
            request_id="req-1",
            action_id=action.id,
        )
    return uid


class Recorder(Middleware):
    """Every hook, as it is called; ``committed`` also reads what the commit left."""

    def __init__(self, rt: HostRuntime, name: str = "") -> None:
        self.rt, self.name = rt, name
        self.calls: list[Any] = []

    @contextlib.contextmanager
    def _around(self, hook: str) -> Iterator[None]:
        self.calls.append(f"{self.name}{hook}")
        try:
            yield
        finally:
            self.calls.append(f"{self.name}{hook} ends")

    def delivering(self, d: Delivery) -> contextlib.AbstractContextManager[None]:
        return self._around("delivering")

    def running(self, d: Delivery) -> contextlib.AbstractContextManager[None]:
        assert d.claim is not None and d.claim.taken
        return self._around("running")

    def before_step(self, d: Delivery, ctx: StepContext) -> None:
        self.calls.append(("before_step", ctx.journal.status, ctx.instance.vm_state))

    def before_hypervisor_work(self, d: Delivery, work: HypervisorWork) -> None:
        self.calls.append(("before_hypervisor_work", work.what))

    def committed(self, d: Delivery, notes: list[Notification]) -> None:
        # Another session sees what the commit wrote: it happened before the hook.
        with self.rt.db.snapshot() as s:
            row = s.scalars(select(StepJournal).where(StepJournal.id == d.row_id)).one()
            inst = s.get(Instance, row.instance_uuid)
            assert inst is not None
            seen = (row.status, inst.vm_state, inst.power_state)
        self.calls.append(("committed", [n.event_type for n in notes], *seen))


def deliver(rt: HostRuntime, fn: str, uid: str, *middleware: Middleware) -> Any:
    flow, step = stop_flow(fn)
    task: Any = _Task()
    return Delivery(task, flow, step, uid, runtime=rt, middleware=Chain(middleware)).run()


def row_of(rt: HostRuntime, uid: str) -> StepJournal:
    with rt.db.snapshot() as s:
        return s.scalars(select(StepJournal).where(StepJournal.instance_uuid == uid)).one()


def events(rt: HostRuntime, uid: str) -> list[tuple[str, str | None]]:
    with rt.db.snapshot() as s:
        found = s.execute(
            select(InstanceActionEvent.event, InstanceActionEvent.result)
            .join(InstanceAction, InstanceAction.id == InstanceActionEvent.action_id)
            .where(InstanceAction.instance_uuid == uid)
        )
        return [(e, r) for e, r in found]


def test_the_hooks_of_a_step_that_commits(runtime: HostRuntime) -> None:
    uid = stopping(runtime)
    rec = Recorder(runtime)
    assert deliver(runtime, "quick_stop", uid, rec) == uid
    assert rec.calls == [
        "delivering",
        "running",
        ("before_step", _J.RUNNING, VmState.ACTIVE),
        (
            "committed",
            ["instance.power_off.start", "instance.power_off.end"],
            _J.DONE,
            VmState.STOPPED,
            PowerState.SHUTDOWN,
        ),
        "running ends",
        "delivering ends",
    ]
    row = row_of(runtime, uid)
    assert (row.status, row.applied, row.attempts, row.deliveries) == (_J.DONE, 1, 1, 1)
    assert events(runtime, uid) == [("compute_stop_instance", "Success")]
    # A redelivery finds the step done: no hook runs the step, nothing commits.
    again = Recorder(runtime)
    assert deliver(runtime, "quick_stop", uid, again) == uid
    assert again.calls == ["delivering", "delivering ends"]
    row = row_of(runtime, uid)
    assert (row.applied, row.deliveries) == (1, 2)


def test_the_hooks_of_a_step_with_a_hypervisor_phase(runtime: HostRuntime) -> None:
    uid = stopping(runtime)
    rec = Recorder(runtime)
    deliver(runtime, "phased_stop", uid, rec)
    assert rec.calls == [
        "delivering",
        "running",
        ("before_step", _J.RUNNING, VmState.ACTIVE),
        # The first phase committed, and its rows are unlocked, before the work.
        ("committed", ["instance.power_off.start"], _J.RUNNING, VmState.ACTIVE, PowerState.RUNNING),
        ("before_hypervisor_work", "shut down"),
        ("committed", ["instance.power_off.end"], _J.DONE, VmState.STOPPED, PowerState.SHUTDOWN),
        "running ends",
        "delivering ends",
    ]
    assert row_of(runtime, uid).applied == 1


def test_the_hooks_of_a_step_that_fails_for_good(runtime: HostRuntime) -> None:
    uid = stopping(runtime)
    rec = Recorder(runtime)
    with pytest.raises(errors.StepFailed, match="the driver said no"):
        deliver(runtime, "refused_stop", uid, rec)
    # The step's own transaction rolled back; the failure's committed, with the
    # error-out's notifications (the step's own never went out).
    assert rec.calls == [
        "delivering",
        "running",
        ("before_step", _J.RUNNING, VmState.ACTIVE),
        (
            "committed",
            ["instance.power_off.error", "compute.exception"],
            _J.FAILED,
            VmState.ERROR,
            PowerState.RUNNING,
        ),
        "running ends",
        "delivering ends",
    ]
    row = row_of(runtime, uid)
    assert (row.status, row.applied) == (_J.FAILED, 0)
    assert row.last_error is not None and row.last_error.startswith("StepFailed: ")
    assert "the driver said no" in row.last_error
    assert events(runtime, uid) == [("compute_stop_instance", "Error")]
    with runtime.db.snapshot() as s:
        faults = s.scalars(select(InstanceFault).where(InstanceFault.instance_uuid == uid)).all()
        assert len(faults) == 1


def test_middleware_run_in_order_and_unwind_in_reverse(runtime: HostRuntime) -> None:
    uid = stopping(runtime)
    first, second = Recorder(runtime, "1:"), Recorder(runtime, "2:")
    shared: list[Any] = []
    first.calls = second.calls = shared
    deliver(runtime, "quick_stop", uid, first, second)
    names = [c if isinstance(c, str) else c[0] for c in shared]
    assert names == [
        "1:delivering",
        "2:delivering",
        "1:running",
        "2:running",
        "before_step",
        "before_step",
        "committed",
        "committed",
        "2:running ends",
        "1:running ends",
        "2:delivering ends",
        "1:delivering ends",
    ]


def test_the_default_middleware_publish_after_the_commit(runtime: HostRuntime) -> None:
    uid = stopping(runtime)
    flow, step = stop_flow("quick_stop")
    task: Any = _Task()
    Delivery(task, flow, step, uid, runtime=runtime).run()
    notes = cast(Notes, runtime.notifier)
    assert notes.published == ["instance.power_off.start", "instance.power_off.end"]


def test_a_hook_nobody_overrides_is_not_called() -> None:
    class Quiet(Middleware):
        pass

    class Loud(Middleware):
        def before_step(self, d: Delivery, ctx: StepContext) -> None:
            raise AssertionError("called")

    chain = Chain([Quiet(), Loud()])
    assert [type(m).__name__ for m in chain._before_step] == ["Loud"]
    assert chain._delivering == chain._running == chain._committed == ()
