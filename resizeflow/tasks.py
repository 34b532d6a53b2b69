"""Thin Celery tasks, registered from the flow table: journal, retry policy, error-out.

Every step of every flow, instance operations included, runs the same way. It
starts with one statement that commits on its own: it counts the delivery and
marks the journal row ``running`` under a lease, so that an attempt is on
record even if the worker dies mid-step. Only the delivery that took the
step (its token is in the row) runs it: a duplicate that finds the step held
under a live lease waits for that copy to end, and takes the step only if
its lease lapses. Then one transaction locks the instance, the migration (for
a migration's flows) and the journal row, returns at once if the step is
already done, and otherwise runs the step, marks it done and writes its
action event in the same commit. Because ``acks_late`` may deliver a message
twice, those checks are what make a redelivery change nothing.

On PostgreSQL the claim, the transaction's BEGIN and the lock travel as one
message, the claim still committed on its own before the BEGIN; the step's
last writes travel with its COMMIT (see :mod:`resizeflow.db.onetrip`).

A step with a hypervisor phase (see :class:`~resizeflow.steps.context.HypervisorWork`)
splits that transaction in two: it reads its rows and commits, does the long
work with no row locked under a renewed and fenced lease, then locks the rows
again and commits its effects with the journal row. A copy whose lease another
copy took over commits nothing.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Generator
from typing import Any

from celery import Task, shared_task
from celery.exceptions import Ignore, Retry
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from resizeflow import errors, flows, hostcall, logs, retry
from resizeflow.db import api as dbapi
from resizeflow.db import journal, onetrip
from resizeflow.db.models import Instance, InstanceAction, Migration, StepJournal
from resizeflow.openstack.base import Notification
from resizeflow.openstack.network import SqlNetwork
from resizeflow.openstack.volume import SqlVolumes
from resizeflow.states import JOURNAL_ENDED, JournalStatus, MigrationStatus
from resizeflow.steps import cleanup, console, failpoints
from resizeflow.steps.context import (
    HostRuntime,
    HypervisorWork,
    PhasedStep,
    StepContext,
    current,
)
from resizeflow.steps.failure import error_out

log = logging.getLogger(__name__)

_J = JournalStatus

TASK_OPTIONS: dict[str, Any] = {
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "max_retries": None,  # the budget comes from settings, see resizeflow.retry
}

StepFn = Callable[[StepContext], PhasedStep | None]


def _retry(task: Task[Any, Any], rt: HostRuntime, exc: Exception) -> Exception:
    """Celery's retry, after the policy's backoff; raise what it returns."""
    countdown = retry.backoff(rt.settings, task.request.retries)
    return task.retry(countdown=countdown, exc=exc, max_retries=None)


@functools.cache
def _lock_statement(
    subject: flows.Subject, dialect: str, *, reads: bool = True, by_key: bool = False
) -> Any:
    """Lock the instance, the migration (a migration's flows) and the step's row.

    NOTE: PostgreSQL locks a join's rows in the order of its FROM list, so this
    takes instance, then migration, then journal row: the order used
    everywhere else (the service layer's compare-and-swap updates too), so it
    never deadlocks with them. Built once per subject: every step runs it.

    ``reads``: it also reads, in the same round trip, what nearly every step
    reads next and nothing can change under it: the action the step is for,
    and the instance's ports and volume attachments (for its VIFs and its
    notifications). They are not locked. A step's second lock, after its
    hypervisor phase, has them already.

    ``by_key``: the row is found as the claim finds it, by the task's key and
    the step (``b_key``, ``b_step``), not by its id (``b_row_id``).
    """
    migration = subject is flows.Subject.MIGRATION
    entities: list[Any] = [Instance, Migration] if migration else [Instance]
    entities.append(StepJournal)
    columns: list[Any] = []
    if reads:
        columns = [
            InstanceAction,
            SqlNetwork.ports_column(dialect, Instance.uuid),
            SqlVolumes.attached_column(dialect, Instance.uuid),
        ]
    stmt: Any = select(*entities, *columns).select_from(Instance)
    if migration:
        stmt = stmt.join(Migration, Migration.instance_uuid == Instance.uuid).join(
            StepJournal, StepJournal.migration_id == Migration.id
        )
    else:
        stmt = stmt.join(StepJournal, StepJournal.instance_uuid == Instance.uuid)
    if reads:
        stmt = stmt.outerjoin(InstanceAction, InstanceAction.id == StepJournal.action_id)
    row = journal.row_of(subject) if by_key else bindparam("b_row_id")
    return stmt.where(StepJournal.id == row, Instance.deleted.is_(False)).with_for_update(
        of=entities
    )


def lock_rows(
    rt: HostRuntime,
    session: Session,
    subject: flows.Subject,
    row_id: int | None,
    *,
    again: bool = False,
    begins: bool = False,
    claim: tuple[Any, str, tuple[str, int]] | None = None,
) -> StepContext | None:
    """The step's context with its rows locked; None when its instance is gone.

    ``again``: the rows are in the session already, from the step's first
    transaction; the lock reads them anew over what it held.

    ``begins``: the lock is the transaction's first statement. On PostgreSQL
    it then carries the ``BEGIN`` in its own round trip (``SELECT ... FOR
    UPDATE; BEGIN``: the server makes the row locks of the statement part of
    the transaction that BEGIN opens), instead of psycopg sending it alone.

    ``claim``: (key, step, the claim as :func:`journal.claim_before` renders
    it), sent before the lock in the same round trip; the lock then finds the
    row by key and step (see :func:`_claim_and_lock`).
    """
    options: dict[str, Any] = {"populate_existing": True} if again else {}
    params: dict[str, Any] = {"b_row_id": row_id}
    dialect = session.get_bind().dialect.name
    if begins and dialect == "postgresql":
        rt.db.unmanaged_connection(session)
        options[onetrip.THEN] = onetrip.BEGIN
    if claim is not None:
        key, step, options[onetrip.BEFORE] = claim
        params = {"b_key": key, "b_step": step}
    stmt = _lock_statement(subject, dialect, reads=not again, by_key=claim is not None)
    found = session.execute(stmt, params, execution_options=options).one_or_none()
    if found is None:
        return None
    if subject is flows.Subject.MIGRATION:
        inst, mig, row, *reads = found
    else:
        (inst, row, *reads), mig = found, None
    ctx = StepContext(session=session, runtime=rt, instance=inst, migration=mig, journal=row)
    if reads:
        action, ports, volumes = reads
        ctx.network.remember(inst.uuid, ports)
        ctx.volumes.remember(inst.uuid, volumes)
        if action is not None:
            ctx.initiator = action
    return ctx


def resolve(step: flows.Step) -> StepFn:
    """The step's function, named ``module:function`` in the flow table."""
    module, _, name = step.fn.partition(":")
    fn: StepFn = getattr(importlib.import_module(module), name)
    return fn


def run_step(task: Task[Any, Any], flow: flows.Flow, step: flows.Step, key: Any) -> Any:
    """Run one delivery of ``step`` for ``key`` (a migration id or an instance uuid)."""
    rt = current()
    bound = {"migration_id": key} if flow.subject is flows.Subject.MIGRATION else {}
    with logs.bound(step=step.task, host=rt.host, **bound):
        return _run_step(task, rt, flow, step, key)


@dataclasses.dataclass(frozen=True)
class _Locked:
    """The step's rows, locked in the claim's round trip; None: its instance is gone."""

    ctx: StepContext | None


def _run_step(
    task: Task[Any, Any], rt: HostRuntime, flow: flows.Flow, step: flows.Step, key: Any
) -> Any:
    holder = uuid.uuid4().hex  # this delivery's own token
    with rt.db.session() as s:
        locked: _Locked | None = None
        if rt.db.is_sqlite:
            claim = _claim(task, rt, flow, step, key, holder)
        else:
            claim, locked = _claim_and_lock(task, rt, s, flow, step, key, holder)
        if claim is None or claim.status != _J.RUNNING or not claim.taken:
            s.rollback()  # the transaction the claim opened has nothing to run
            locked = None
        while claim is not None and claim.status == _J.RUNNING and not claim.taken:
            # NOTE: a live copy holds the step, maybe in its hypervisor phase with
            # no row locked: wait for it to end rather than run beside it. If its
            # lease lapses (its worker died), claim the step again.
            ended = _wait_for_holder(rt, claim.row_id)
            if ended is None:
                claim = _claim(task, rt, flow, step, key, holder)
            elif ended == _J.RETRYING:
                raise Ignore()  # it failed transiently: its own retry carries the chain on
            else:
                claim = dataclasses.replace(claim, status=ended)
        if claim is None:
            if flow.subject is flows.Subject.INSTANCE:
                return key  # no operation of this kind was ever planned for it
            # NOTE: no live row: an abort handed the flow back (its rows are
            # superseded) while this message waited in a queue. The chain
            # ends here, and nothing of the flow runs.
            log.warning("step %s of migration %s has no live journal row; not run", step.task, key)
            raise Ignore()
        if claim.status == _J.DONE:
            return key
        if claim.status in JOURNAL_ENDED:
            raise Ignore()
        with (
            logs.bound(request_id=claim.request_id, instance_uuid=claim.instance_uuid),
            rt.executing_step(claim.row_id),
        ):
            _run_locked(task, rt, s, flow, step, claim.row_id, holder, locked)
    return key


def _claim(
    task: Task[Any, Any],
    rt: HostRuntime,
    flow: flows.Flow,
    step: flows.Step,
    key: Any,
    holder: str,
) -> journal.Claim | None:
    """Claim the step (see :func:`journal.claim`), in a round trip of its own."""
    worker = rt.incarnation or rt.host
    try:
        with rt.db.autocommit() as conn:
            return journal.claim(
                conn, flow.subject, key, step.task, worker, rt.settings.step_lease, holder
            )
    except retry.TRANSIENT as exc:
        # The database or broker hiccupped before the step started: nothing
        # was done, so simply try again later.
        raise _retry(task, rt, exc) from exc


def _claim_and_lock(
    task: Task[Any, Any],
    rt: HostRuntime,
    s: Session,
    flow: flows.Flow,
    step: flows.Step,
    key: Any,
    holder: str,
) -> tuple[journal.Claim | None, _Locked | None]:
    """Claim the step and lock its rows in one round trip (PostgreSQL).

    The message is ``claim; COMMIT; BEGIN; lock``. The claim commits on its
    own before anything else runs, exactly as :func:`journal.claim` does, so
    an attempt is on record even if the worker dies mid-step; the lock runs
    in the step's transaction and finds the row by key and step, as the
    claim did, and sees it claimed. When the claim did not take the step the
    caller rolls that transaction back. Returns the claim, and the locked
    rows when they are the claimed row's.
    """
    worker = rt.incarnation or rt.host
    try:
        conn = rt.db.unmanaged_connection(s)
        before = journal.claim_before(
            conn, flow.subject, key, step.task, worker, rt.settings.step_lease, holder
        )
        ctx = lock_rows(rt, s, flow.subject, None, claim=(key, step.task, before))
        claim = journal.before_claimed(conn, holder)
    except (Ignore, Retry):
        raise
    except Exception as exc:
        s.rollback()
        _failed_after_claim(task, rt, flow, step, key, holder, exc)
        raise
    if claim is None or ctx is None:
        return claim, _Locked(None)
    if ctx.journal.id != claim.row_id:
        # The flow was planned again between the two (an operator's retry).
        s.rollback()
        return claim, None
    return claim, _Locked(ctx)


def _failed_after_claim(
    task: Task[Any, Any],
    rt: HostRuntime,
    flow: flows.Flow,
    step: flows.Step,
    key: Any,
    holder: str,
    exc: Exception,
) -> None:
    """The claim's round trip failed: if the claim committed, this delivery
    holds the step, and fails it as a step failure; otherwise nothing was done."""
    try:
        with rt.db.autocommit() as conn:
            row_id = journal.held_by(conn, flow.subject, key, step.task, holder)
    except retry.TRANSIENT:
        row_id = None
    if row_id is None:
        if isinstance(exc, retry.TRANSIENT):
            raise _retry(task, rt, exc) from exc
        return
    with rt.executing_step(row_id):
        _retry_or_fail(task, rt, step, row_id, holder, exc)


def _wait_for_holder(rt: HostRuntime, row_id: int) -> JournalStatus | None:
    """Wait while another copy holds the step under a live lease.

    Returns the status the step ended in (or ``retrying``), or None once the
    holder's lease lapsed or the step can be claimed again.
    """
    poll = min(0.5, rt.settings.step_lease / 4)
    while True:
        time.sleep(poll)
        with rt.db.snapshot() as s:
            row = journal.get(s, row_id)
        if row is None:
            return None
        if row.status in JOURNAL_ENDED or row.status == _J.RETRYING:
            return JournalStatus(row.status)
        if row.status != _J.RUNNING or not journal.lease_live(row):
            return None


def _run_locked(
    task: Task[Any, Any],
    rt: HostRuntime,
    s: Session,
    flow: flows.Flow,
    step: flows.Step,
    row_id: int,
    holder: str,
    locked: _Locked | None = None,
) -> None:
    try:
        # ``locked``: the claim's round trip has begun the transaction and
        # locked the rows already.
        first = s.get_transaction() if locked is not None else s.begin()
        assert first is not None
        with first:
            if locked is not None:
                ctx = locked.ctx
            else:
                ctx = lock_rows(rt, s, flow.subject, row_id, begins=True)
            if ctx is None or _ended_meanwhile(ctx, flow):
                _end_unrun(s, row_id, ctx)
                return
            if ctx.journal.status == _J.DONE:
                return
            if not journal.holds(ctx.journal, holder):
                raise errors.LeaseLost(step=step.task, holder=ctx.journal.worker)
            failpoints.check(rt.settings.failpoints_file, step.task, ctx.instance.uuid)
            phases = resolve(step)(ctx)
            work = next_phase(phases)
            if work is None:
                journal.finish(
                    s, ctx.journal, host=rt.host, ends_action=step is flow.last, commit=True
                )
            elif onetrip.supported(s.connection()):
                # What the step wrote before its hypervisor work commits with
                # the COMMIT, in one round trip.
                onetrip.flush_then(s, [], onetrip.COMMIT)
        if work is not None:
            assert phases is not None
            # NOTE: the rows are committed and unlocked here: a request that
            # locks the server is answered while the hypervisor works.
            publish(rt, ctx.notifications)
            ctx.notifications.clear()
            result = _hypervisor_phase(rt, step, ctx.instance.uuid, row_id, holder, work)
            with s.begin():
                again = lock_rows(rt, s, flow.subject, row_id, again=True, begins=True)
                if again is None:
                    _end_unrun(s, row_id, None)
                    return
                if again.journal.status in JOURNAL_ENDED:
                    # Another copy finished it, or a delete ended it meanwhile.
                    log.info("step %s %s meanwhile", step.task, again.journal.status)
                    return
                if not journal.holds(again.journal, holder):
                    raise errors.LeaseLost(step=step.task, holder=again.journal.worker)
                last_phase(phases, result)
                journal.finish(
                    s, ctx.journal, host=rt.host, ends_action=step is flow.last, commit=True
                )
    except errors.LeaseLost as exc:
        # The copy that took the step over carries the chain on; this one's
        # hypervisor work was safe to repeat, and it commits nothing.
        log.warning("%s", exc.message)
        raise Ignore() from exc
    except errors.WorkflowAborted as exc:
        log.warning("%s", exc.message)
        with rt.db.transaction() as t:
            aborted = journal.get(t, row_id, lock=True)
            assert aborted is not None
            # A delete may have ended the row already (aborted).
            if aborted.status not in JOURNAL_ENDED:
                journal.fail(aborted, exc.message, final=True)
        raise Ignore() from exc
    except Exception as exc:
        _retry_or_fail(task, rt, step, row_id, holder, exc)
        raise
    log.info("step %s done on %s", step.task, rt.host)
    publish(rt, ctx.notifications)


def next_phase(phases: PhasedStep | None) -> HypervisorWork | None:
    """Run a step up to its hypervisor work, if it has any."""
    if not isinstance(phases, Generator):
        return None
    try:
        work: HypervisorWork = next(phases)
        return work
    except StopIteration:
        return None  # it decided there was no hypervisor work to do


def last_phase(phases: PhasedStep, result: Any) -> None:
    try:
        phases.send(result)
    except StopIteration:
        return
    raise errors.StepFailed(step=repr(phases), reason="a step has one hypervisor phase")


def _hypervisor_phase(
    rt: HostRuntime,
    step: flows.Step,
    instance_uuid: str,
    row_id: int,
    holder: str,
    work: HypervisorWork,
) -> Any:
    """Run ``work`` with no row locked, renewing the step's lease while it runs.

    ``RESIZEFLOW_STEP_TIMEOUT`` bounds it: the work gets the deadline (its
    copies and waits stop there), and work that overran it fails
    transiently, so the retry policy tries again and then errors out.
    """
    settings = rt.settings
    deadline = time.monotonic() + settings.step_timeout
    stop = threading.Event()

    def renew() -> None:
        # Fenced: once another copy took the step over, renewing stops and
        # the second lock finds the row no longer ours.
        while not stop.wait(settings.step_lease / 3):
            try:
                with rt.db.autocommit() as conn:
                    if not journal.renew_lease(conn, row_id, holder, settings.step_lease):
                        log.warning(
                            "lease of journal row %s taken over during %s", row_id, work.what
                        )
                        return
            except retry.TRANSIENT as exc:
                log.warning("could not renew the lease of journal row %s: %s", row_id, exc)

    renewer = threading.Thread(target=renew, name=f"lease-{row_id}", daemon=True)
    renewer.start()
    started = time.monotonic()
    try:
        # "<task>:hypervisor" failpoints act here, with no row locked.
        failpoints.check(settings.failpoints_file, f"{step.task}:hypervisor", instance_uuid)
        result = work.run(deadline)
    finally:
        stop.set()
        renewer.join()
    took = time.monotonic() - started
    if time.monotonic() > deadline:
        raise errors.TransientError(
            reason=f"{work.what} took {took:.0f}s, past the step timeout "
            f"({settings.step_timeout:.0f}s)"
        )
    log.info("%s took %.1fs", work.what, took)
    return result


def _ended_meanwhile(ctx: StepContext, flow: flows.Flow) -> bool:
    """Whether the work was ended while this step waited: its migration errored
    out, or its instance no longer shows the operation's task_state (a reset)."""
    if ctx.journal.status == _J.DONE:
        return False
    if ctx.migration is not None and ctx.migration.status == MigrationStatus.ERROR:
        raise errors.WorkflowAborted(
            migration_id=ctx.migration.id, status="error", step=ctx.journal.step
        )
    return flow.task_state is not None and ctx.instance.task_state not in flow.task_states


def _end_unrun(session: Any, row_id: int, ctx: StepContext | None) -> None:
    """Close a step that has nothing left to do, so the reconciler lets it be."""
    row = ctx.journal if ctx is not None else journal.get(session, row_id, lock=True)
    if row is None or row.status in (_J.DONE, _J.ABORTED):
        return
    reason = "the server was deleted" if ctx is None else "the server's task state changed"
    journal.end(row, _J.ABORTED, reason)
    log.info("step %s not run: %s", row.step, reason)


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
    dbapi.record_event(
        session,
        dbapi.event_params(
            row.action_id,
            flows.step(row.step).event,
            host=rt.host,
            start=row.started_at,
            result=result,
            traceback=traceback,
        ),
    )
    if ends_action:
        dbapi.finish_action(session, row.action_id, error=result == "Error")


def publish(rt: HostRuntime, notes: list[Notification]) -> None:
    # Notifications are best effort, as in Nova: the step has committed, and a
    # broker hiccup here must not turn a finished step into a failed one.
    try:
        rt.notifier.publish(notes)
    except Exception:
        log.exception("could not publish %d notifications", len(notes))


def _retry_or_fail(
    task: Task[Any, Any],
    rt: HostRuntime,
    step: flows.Step,
    row_id: int,
    holder: str,
    exc: Exception,
) -> None:
    details = traceback.format_exc()
    final = retry.is_final(rt.settings, exc, task.request.retries)
    log.warning(
        "step %s failed (%s, attempt %d): %s",
        step.task,
        "final" if final else "will retry",
        task.request.retries + 1,
        exc,
    )
    try:
        notes = _record_failure(rt, row_id, holder, exc, details, final)
    except retry.TRANSIENT as db_exc:
        # NOTE: the database itself is unreachable, so the failure cannot even
        # be recorded. Try the step again later rather than lose the chain;
        # its journal row still says running, and its lease will lapse.
        log.warning("cannot record the failure of %s: %s", step.task, db_exc)
        raise _retry(task, rt, exc) from exc
    if not final:
        raise _retry(task, rt, exc)
    publish(rt, notes)


def _record_failure(
    rt: HostRuntime, row_id: int, holder: str, exc: Exception, details: str, final: bool
) -> list[Notification]:
    notes: list[Notification] = []
    with rt.db.transaction() as s:
        # Same lock order as the step itself: instance, migration, journal.
        subject = flows.flow_of(_step_name(s, row_id)).subject
        ctx = lock_rows(rt, s, subject, row_id) if final else None
        row = ctx.journal if ctx is not None else journal.get(s, row_id, lock=True)
        assert row is not None
        if row.status in JOURNAL_ENDED or (row.status == _J.RUNNING and row.holder != holder):
            # NOTE: another copy of this step (a redelivery, or the reconciler's)
            # finished it, or took it over during its hypervisor work, while
            # this one failed. Marking it failed or retrying would undo that
            # and run the step twice; that copy carries the chain on.
            log.info("step %s is another copy's (%s)", row.step, row.status)
            raise Ignore()
        # A rollback records the failure itself, as its fault does.
        cause = exc.inner if isinstance(exc, errors.InstanceFaultRollback) else exc
        journal.fail(row, f"{type(cause).__name__}: {cause}", final=final)
        # A step waiting for its retry shows as an event in progress.
        result, tb = ("Error", details) if final else (None, None)
        _failure_event(s, rt, row, result=result, traceback=tb, ends_action=final)
        if ctx is not None:
            inst, mig = ctx.instance, ctx.migration
            row.restore = {
                "migration_status": mig.status.value if mig is not None else None,
                "vm_state": inst.vm_state.value,
                "task_state": inst.task_state.value if inst.task_state else None,
            }
            error_out(ctx, row.step, exc, details)
            notes = ctx.notifications
    return notes


def _step_name(session: Any, row_id: int) -> str:
    name: str = session.scalar(select(StepJournal.step).where(StepJournal.id == row_id))
    return name


def _register(flow: flows.Flow, step: flows.Step) -> Any:
    def body(self: Task[Any, Any], key: Any) -> Any:
        return run_step(self, flow, step, key)

    body.__name__ = step.short
    body.__qualname__ = step.short
    return shared_task(name=step.task, **TASK_OPTIONS)(body)  # type: ignore[no-untyped-call]


# Every step of every flow in the table, by its Celery task name.
STEP_TASKS: dict[str, Any] = {
    step.task: _register(flow, step) for flow in flows.FLOWS.values() for step in flow.steps
}


# -- host tasks: cleaning up after a deleted server ---------------------------
def _host_task(name: str) -> Callable[[Callable[..., Any]], Any]:
    deco: Callable[[Callable[..., Any]], Any] = shared_task(name=name, **TASK_OPTIONS)
    return deco


def _host_work(task: Task[Any, Any], rt: HostRuntime, fn: Callable[[], Any]) -> Any:
    """Host tasks follow the same retry policy as steps; a final failure is logged
    and left for the periodic cleanup, which sends the work again."""
    try:
        return fn()
    except Exception as exc:
        if retry.is_final(rt.settings, exc, task.request.retries):
            log.exception("%s failed for good on %s", task.name, rt.host)
            raise
        raise _retry(task, rt, exc) from exc


@_host_task(flows.HOST_TASKS.purge_instance_files)
def purge_instance_files(self: Task[Any, Any], instance_uuid: str) -> str:
    rt = current()
    removed = _host_work(self, rt, lambda: cleanup.purge_instance_files(rt.virt, instance_uuid))
    log.info("purged %s of deleted instance %s on %s", removed or "nothing", instance_uuid, rt.host)
    return instance_uuid


@shared_task(name=flows.HOST_TASKS.console_output, bind=True, ignore_result=True)
def console_output(
    self: Task[Any, Any], instance_uuid: str, length: int | None, reply_to: str
) -> None:
    """Answer an ``os-getConsoleOutput``: a read, so neither journaled nor retried."""
    rt = current()
    hostcall.answer(
        self.app, reply_to, lambda: console.console_output(rt.virt, instance_uuid, length)
    )


@shared_task(name=flows.HOST_TASKS.domain_whole, bind=True, ignore_result=True)
def domain_whole(self: Task[Any, Any], instance_uuid: str, reply_to: str) -> None:
    """Answer whether this host still has the instance's domain, whole."""
    rt = current()
    hostcall.answer(self.app, reply_to, lambda: rt.virt.domain_whole(instance_uuid))


@_host_task(flows.HOST_TASKS.finish_cleanup)
def finish_cleanup(self: Task[Any, Any], migration_id: int) -> int:
    rt = current()

    def work() -> None:
        with rt.db.transaction() as s:
            cleanup.fail_migration(s, dbapi.get_migration(s, migration_id, lock=True))

    _host_work(self, rt, work)
    return migration_id
