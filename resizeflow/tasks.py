"""Thin Celery tasks: journal, retry policy and error-out around each step.

A migration step starts with one statement that commits on its own: it counts
the delivery and marks the journal row ``running`` under a lease, so that an
attempt is on record even if the worker dies mid-step. Then one transaction
locks the instance, migration and journal rows, returns at once if the step
is already done, and otherwise runs the step, marks it done and writes its
action event in the same commit. Because ``acks_late`` may deliver a message
twice, that check under the locks is what makes a redelivery change nothing.
"""

from __future__ import annotations

import functools
import logging
import random
import traceback
from collections.abc import Callable
from typing import Any

import kombu.exceptions
import redis.exceptions
import sqlalchemy.exc
from celery import Task, shared_task
from celery.exceptions import Ignore
from sqlalchemy import bindparam, select

from resizeflow import errors, logs
from resizeflow.conf import Settings
from resizeflow.db import api as db
from resizeflow.db import journal
from resizeflow.db.models import Instance, InstanceAction, Migration, StepJournal
from resizeflow.drivers.base import Notification
from resizeflow.states import MigrationStatus, VmState
from resizeflow.steps import cleanup, confirm, failpoints, instance, resize, revert
from resizeflow.steps.context import HostRuntime, InstanceContext, StepContext, current
from resizeflow.steps.failure import error_out

log = logging.getLogger(__name__)

# Worth another try: the step itself is fine, something it talks to hiccupped.
TRANSIENT: tuple[type[Exception], ...] = (
    errors.TransientError,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    kombu.exceptions.OperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionError,
    TimeoutError,
)

TASK_OPTIONS: dict[str, Any] = {
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "max_retries": None,  # the budget comes from settings, see _retry_or_fail
}


def backoff(settings: Settings, retries: int) -> float:
    """Exponential backoff with equal jitter, capped by settings."""
    ceiling = min(settings.retry_backoff_max, settings.retry_backoff * (2**retries))
    return float(ceiling / 2 + random.uniform(0, ceiling / 2))


@functools.cache
def _lock_statement() -> Any:
    # Built once: every step runs it, and building it costs more than running it.
    return (
        select(Instance, Migration, StepJournal)
        .select_from(Instance)
        .join(Migration, Migration.instance_uuid == Instance.uuid)
        .join(StepJournal, StepJournal.migration_id == Migration.id)
        .where(
            Migration.id == bindparam("b_migration_id"),
            StepJournal.step == bindparam("b_step"),
            Instance.deleted.is_(False),
        )
        .with_for_update()
    )


def _lock_rows(rt: HostRuntime, session: Any, migration_id: int, name: str) -> StepContext:
    """Lock the instance, the migration and the step's journal row, in one statement.

    NOTE: PostgreSQL locks a join's rows in the order of its FROM list, so this
    takes instance, then migration, then journal row: the order used
    everywhere else (the service layer's compare-and-swap updates too), so it
    never deadlocks with them.
    """
    found = session.execute(
        _lock_statement(), {"b_migration_id": migration_id, "b_step": name}
    ).one_or_none()
    if found is None:
        mig = db.get_migration(session, migration_id)
        row = journal.get(session, migration_id, name)
        if mig.status in (MigrationStatus.ERROR, MigrationStatus.FAILED) or (
            row is not None and row.status == journal.ABORTED
        ):
            # NOTE: a delete ended this workflow (ComputeAPI.delete) and the
            # server may be gone already: there is nothing left for this step.
            raise errors.WorkflowAborted(
                migration_id=migration_id, status=mig.status.value, step=name
            )
        # Which row is missing decides the error; the lookups raise it.
        db.get_instance(session, mig.instance_uuid)
        raise errors.StepFailed(step=name, reason=f"migration {migration_id} has no plan")
    inst, mig, row = found
    return StepContext(session=session, runtime=rt, instance=inst, migration=mig, journal=row)


def run_step(
    task: Task[Any, Any],
    name: str,
    fn: Callable[[StepContext], None],
    migration_id: int,
    *,
    last: bool,
) -> int:
    rt = current()
    with logs.bound(migration_id=migration_id, step=name, host=rt.host):
        return _run_step(task, rt, name, fn, migration_id, last)


def _run_step(
    task: Task[Any, Any],
    rt: HostRuntime,
    name: str,
    fn: Callable[[StepContext], None],
    migration_id: int,
    last: bool,
) -> int:
    try:
        with rt.db.autocommit() as conn:
            claim = journal.claim(
                conn, migration_id, name, rt.incarnation or rt.host, rt.settings.step_lease
            )
    except TRANSIENT as exc:
        # The database or broker hiccupped before the step started: nothing
        # was done, so simply try again later.
        countdown = backoff(rt.settings, task.request.retries)
        raise task.retry(countdown=countdown, exc=exc, max_retries=None) from exc
    if claim is None:
        raise errors.StepFailed(step=name, reason=f"migration {migration_id} has no plan")
    if claim.status == journal.DONE:
        return migration_id
    if claim.status in (journal.FAILED, journal.ABORTED):
        raise Ignore()
    # A copy that is still running (its lease is live) holds the row locks
    # that _run_locked takes: this one waits there and finds the step done.
    # Mutual exclusion comes from those locks, which the database drops when
    # a worker dies; the lease only tells the reconciler whether the running
    # copy is still alive.
    with (
        logs.bound(request_id=claim.request_id, instance_uuid=claim.instance_uuid),
        rt.executing_step(migration_id, name),
    ):
        return _run_locked(task, rt, name, fn, migration_id, claim, last)


def _run_locked(
    task: Task[Any, Any],
    rt: HostRuntime,
    name: str,
    fn: Callable[[StepContext], None],
    migration_id: int,
    claim: journal.Claim,
    last: bool,
) -> int:
    try:
        with rt.db.transaction() as s:
            ctx = _lock_rows(rt, s, migration_id, name)
            row = ctx.journal
            if row.status == journal.DONE:
                return migration_id
            if ctx.migration.status == MigrationStatus.ERROR:
                raise errors.WorkflowAborted(migration_id=migration_id, status="error", step=name)
            failpoints.check(rt.settings.failpoints_file, name, ctx.instance.uuid)
            fn(ctx)
            journal.finish(s, row, host=rt.host, ends_action=last)
    except errors.WorkflowAborted as exc:
        log.warning("%s", exc.message)
        with rt.db.transaction() as s:
            aborted = journal.get(s, migration_id, name, lock=True)
            assert aborted is not None
            if aborted.status != journal.DONE:
                journal.fail(aborted, exc.message, final=True)
        raise Ignore() from exc
    except Exception as exc:
        _retry_or_fail(task, rt, name, migration_id, exc)
        raise
    log.info("step %s done for migration %s on %s", name, migration_id, rt.host)
    _publish(rt, ctx.notifications)
    return migration_id


def _failure_event(
    session: Any,
    rt: HostRuntime,
    row: StepJournal,
    *,
    result: str | None,
    traceback: str | None = None,
    ends_action: bool = False,
) -> None:
    """Write a failed step's action event; a final failure ends the action."""
    if row.action_id is None:
        return
    db.record_event(
        session,
        db.event_params(
            row.action_id,
            journal.event_name(row.step),
            host=rt.host,
            start=row.started_at,
            result=result,
            traceback=traceback,
        ),
    )
    if ends_action:
        db.finish_action(session, row.action_id, error=result == "Error")


def _publish(rt: HostRuntime, notes: list[Notification]) -> None:
    # Notifications are best effort, as in Nova: the step has committed, and a
    # broker hiccup here must not turn a finished step into a failed one.
    try:
        rt.notifier.publish(notes)
    except Exception:
        log.exception("could not publish %d notifications", len(notes))


def _retry_or_fail(
    task: Task[Any, Any],
    rt: HostRuntime,
    name: str,
    migration_id: int,
    exc: Exception,
) -> None:
    details = traceback.format_exc()
    transient = isinstance(exc, TRANSIENT)
    final = not transient or task.request.retries >= rt.settings.step_max_retries
    log.warning(
        "step %s for migration %s failed (%s, attempt %d): %s",
        name,
        migration_id,
        "final" if final else "will retry",
        task.request.retries + 1,
        exc,
    )
    try:
        notes = _record_failure(rt, name, migration_id, exc, details, final)
    except TRANSIENT as db_exc:
        # NOTE: the database itself is unreachable, so the failure cannot even
        # be recorded. Try the step again later rather than lose the chain;
        # its journal row still says running, and its lease will lapse.
        log.warning("cannot record the failure of %s: %s", name, db_exc)
        raise task.retry(countdown=backoff(rt.settings, task.request.retries), exc=exc) from exc
    if not final:
        raise task.retry(countdown=backoff(rt.settings, task.request.retries), exc=exc)
    _publish(rt, notes)


def _record_failure(
    rt: HostRuntime,
    name: str,
    migration_id: int,
    exc: Exception,
    details: str,
    final: bool,
) -> list[Notification]:
    notes: list[Notification] = []
    with rt.db.transaction() as s:
        # Same lock order as the step itself: instance, migration, journal.
        ctx = _lock_rows(rt, s, migration_id, name) if final else None
        row = ctx.journal if ctx is not None else journal.get(s, migration_id, name, lock=True)
        assert row is not None
        if row.status == journal.DONE:
            # NOTE: another copy of this step (a redelivery, or the reconciler's)
            # finished it while this one failed. Marking it failed or retrying
            # would undo that and run the step twice; that copy carries the chain on.
            log.info("step %s for migration %s was done by another copy", name, migration_id)
            raise Ignore()
        journal.fail(row, f"{type(exc).__name__}: {exc}", final=final)
        # A step waiting for its retry shows as an event in progress.
        result, tb = ("Error", details) if final else (None, None)
        _failure_event(s, rt, row, result=result, traceback=tb, ends_action=final)
        if ctx is not None:
            inst, mig = ctx.instance, ctx.migration
            row.restore = {
                "migration_status": mig.status.value,
                "vm_state": inst.vm_state.value,
                "task_state": inst.task_state.value if inst.task_state else None,
            }
            error_out(ctx, name, exc, details)
            notes = ctx.notifications
    return notes


def run_instance_op(task: Task[Any, Any], op: str, instance_uuid: str) -> str:
    """Run spawn/stop/start/delete once; a redelivery finds the task_state cleared."""
    rt = current()
    with logs.bound(instance_uuid=instance_uuid, step=f"instance.{op}", host=rt.host):
        return _run_instance_op(task, rt, op, instance_uuid)


def _run_instance_op(task: Task[Any, Any], rt: HostRuntime, op: str, instance_uuid: str) -> str:
    fn = instance.OPERATIONS[op]
    try:
        with rt.db.transaction() as s:
            try:
                inst = db.get_instance(s, instance_uuid, lock=True)
            except errors.InstanceNotFound:
                return instance_uuid  # deleted already
            if inst.task_state != instance.EXPECTED_TASK_STATE[op]:
                return instance_uuid
            action = _latest_action(s, instance_uuid, op)
            ctx = InstanceContext(session=s, runtime=rt, instance=inst)
            fn(ctx)
            if action is not None:
                action.finish_time = inst.updated_at
    except Exception as exc:
        if isinstance(exc, TRANSIENT) and task.request.retries < rt.settings.step_max_retries:
            raise task.retry(countdown=backoff(rt.settings, task.request.retries), exc=exc) from exc
        _instance_error(rt, instance_uuid, exc)
        raise
    _publish(rt, ctx.notifications)
    return instance_uuid


def _latest_action(session: Any, instance_uuid: str, op: str) -> InstanceAction | None:
    name = {"spawn": "create"}.get(op, op)
    action: InstanceAction | None = session.scalars(
        select(InstanceAction)
        .where(InstanceAction.instance_uuid == instance_uuid, InstanceAction.action == name)
        .order_by(InstanceAction.id.desc())
        .limit(1)
    ).first()
    return action


def _instance_error(rt: HostRuntime, instance_uuid: str, exc: Exception) -> None:
    with rt.db.transaction() as s:
        inst = db.get_instance(s, instance_uuid, lock=True)
        inst.vm_state, inst.task_state = VmState.ERROR, None
        db.add_fault(s, instance_uuid, exc, rt.host, traceback.format_exc())


def _host_task(name: str) -> Callable[[Callable[..., Any]], Any]:
    deco: Callable[[Callable[..., Any]], Any] = shared_task(name=name, **TASK_OPTIONS)
    return deco


@_host_task("resizeflow.host.purge_instance_files")
def purge_instance_files(self: Task[Any, Any], instance_uuid: str) -> str:
    rt = current()
    try:
        removed = cleanup.purge_instance_files(rt.virt, instance_uuid)
    except TRANSIENT as exc:
        raise self.retry(countdown=backoff(rt.settings, self.request.retries), exc=exc) from exc
    log.info("purged %s of deleted instance %s on %s", removed or "nothing", instance_uuid, rt.host)
    return instance_uuid


@_host_task("resizeflow.host.finish_cleanup")
def finish_cleanup(self: Task[Any, Any], migration_id: int) -> int:
    rt = current()
    try:
        with rt.db.transaction() as s:
            cleanup.fail_migration(s, db.get_migration(s, migration_id, lock=True))
    except TRANSIENT as exc:
        raise self.retry(countdown=backoff(rt.settings, self.request.retries), exc=exc) from exc
    return migration_id


def _step_task(flow: str, fn: Callable[[StepContext], None], last: bool) -> tuple[str, Any]:
    name = f"resizeflow.{flow}.{fn.__name__}"

    def body(self: Task[Any, Any], migration_id: int) -> int:
        return run_step(self, name, fn, migration_id, last=last)

    body.__name__ = fn.__name__
    body.__doc__ = fn.__doc__
    return name, shared_task(name=name, **TASK_OPTIONS)(body)  # type: ignore[no-untyped-call]


def _instance_task(op: str) -> tuple[str, Any]:
    name = f"resizeflow.instance.{op}"

    def body(self: Task[Any, Any], instance_uuid: str) -> str:
        return run_instance_op(self, op, instance_uuid)

    body.__name__ = op
    return name, shared_task(name=name, **TASK_OPTIONS)(body)  # type: ignore[no-untyped-call]


# The last step of a flow also finishes the flow's instance action.
STEP_TASKS: dict[str, Any] = dict(
    _step_task(module.FLOW, fn, last=fn is module.STEPS[-1])
    for module in (resize, confirm, revert)
    for fn in module.STEPS
)
INSTANCE_TASKS: dict[str, Any] = dict(_instance_task(op) for op in instance.OPERATIONS)
