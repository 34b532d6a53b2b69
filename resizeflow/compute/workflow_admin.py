"""Operator verbs on a workflow: retry it from its failed step, or abort it.

Both are admin-only and recorded as instance actions (``workflowRetry``,
``workflowAbort``). Neither is ever silent: a retry puts the rows back as they
were when the step failed and sends the rest of the chain; an abort either
compensates (hands the resize back to the user) or leaves the server in ERROR
with a fault that says what was left behind.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session

from resizeflow import errors, flows, routing
from resizeflow.compute.events import record_action
from resizeflow.compute.policy import RequestContext, authorize
from resizeflow.conf import Settings
from resizeflow.db import api as dbapi
from resizeflow.db import journal, services
from resizeflow.db.instances import SystemMetadata, forget_resize
from resizeflow.db.models import Instance, InstanceActionEvent, Migration, StepJournal, utcnow
from resizeflow.db.session import Database
from resizeflow.openstack.base import NodeRef
from resizeflow.openstack.network import SqlNetwork
from resizeflow.openstack.placement import SqlPlacement
from resizeflow.states import (
    JOURNAL_ENDED,
    JournalStatus,
    MigrationStatus,
    TaskState,
    VmState,
    check_journal,
    check_migration,
    check_vm,
)

_J = JournalStatus
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Seen:
    """What the host of a step said of the instance's domain, and the step's
    journal row as it was when it was asked."""

    row_id: int
    status: str
    attempts: int
    host: str
    whole: bool

    def still(self, row: StepJournal) -> bool:
        """Whether ``row`` is as it was when the host answered."""
        return (row.id, str(row.status), row.attempts) == (self.row_id, self.status, self.attempts)


@dataclass(frozen=True)
class Outcome:
    migration_id: int
    flow: str
    step: str
    result: str  # "retried", "compensated" or "left in error"
    message: str


def _current(session: Session, mig_id: int) -> tuple[list[StepJournal], StepJournal]:
    """The rows of the migration's latest flow, and its first step not done."""
    rows = journal.rows(session, mig_id)
    latest = max(rows, key=lambda r: r.enqueued_at, default=None)
    if latest is None:
        raise errors.WorkflowNotFailed(migration_id=mig_id, status="not started", verb="changed")
    flow_rows = sorted((r for r in rows if r.flow == latest.flow), key=lambda r: r.position)
    first = next((r for r in flow_rows if r.status != _J.DONE), None)
    if first is None:
        raise errors.WorkflowNotFailed(migration_id=mig_id, status="finished", verb="changed")
    return flow_rows, first


def _locked(
    session: Session, mig_id: int
) -> tuple[Instance, Migration, list[StepJournal], StepJournal]:
    """The server and migration, locked in the steps' order, and the latest flow's rows."""
    mig = dbapi.get_migration(session, mig_id)
    inst = dbapi.get_instance(session, mig.instance_uuid, lock=True)
    mig = dbapi.get_migration(session, mig_id, lock=True)
    return (inst, mig, *_current(session, mig_id))


class WorkflowAdmin:
    def __init__(self, settings: Settings, database: Database, app: Celery) -> None:
        self.settings, self.database, self.app = settings, database, app

    def retry(self, caller: RequestContext, migration_id: int) -> Outcome:
        """Resume a failed workflow at its failed step, with the rows as they were then."""
        authorize(caller, "compute:workflows:retry")
        with self.database.transaction() as s:
            inst, mig, rows, failed = _locked(s, migration_id)
            if (
                mig.status != MigrationStatus.ERROR
                or failed.status != _J.FAILED
                or not failed.restore
            ):
                raise errors.WorkflowNotFailed(
                    migration_id=migration_id, status=mig.status.value, verb="retried"
                )
            restore = failed.restore
            mig.status = check_migration(mig.status, MigrationStatus(restore["migration_status"]))
            inst.vm_state = check_vm(inst.vm_state, VmState(restore["vm_state"]))
            # Put back exactly the task_state the step failed under: the steps
            # check their own transitions from there.
            task = restore["task_state"]
            inst.task_state = TaskState(task) if task else None
            failed.status = check_journal(failed.status, _J.PENDING)
            failed.restore, failed.enqueued_at = None, utcnow()
            rest = tuple(journal.PlannedStep(r.step, r.host) for r in rows[rows.index(failed) :])
            # An operator verb is over once it is recorded: its action ends at once.
            record_action(caller, s, inst, "workflowRetry").finish_time = utcnow()
        routing.launch(self.app, migration_id, rest)
        return Outcome(
            migration_id,
            failed.flow,
            failed.step,
            "retried",
            f"{failed.flow} resumed at {failed.step.rsplit('.', 1)[1]} on {failed.host}",
        )

    def abort(self, caller: RequestContext, migration_id: int) -> Outcome:
        """End a failed or stalled workflow: compensate where it is safe, else ERROR + fault."""
        authorize(caller, "compute:workflows:abort")
        seen = self._ask_the_hypervisor(migration_id)
        with self.database.transaction() as s:
            inst, mig, rows, first = _locked(s, migration_id)
            # A failed step without a restore point was aborted already.
            ended = first.status == _J.ABORTED or (first.status == _J.FAILED and not first.restore)
            if ended or mig.status in (MigrationStatus.CONFIRMED, MigrationStatus.FAILED):
                raise errors.WorkflowNotFailed(
                    migration_id=migration_id, status=mig.status.value, verb="aborted"
                )
            if first.status == _J.RUNNING and journal.lease_live(first):
                raise errors.WorkflowStepRunning(
                    step=first.step, migration_id=migration_id, host=first.host
                )
            outcome = self._end(s, caller, inst, mig, rows, first, seen)
            record_action(caller, s, inst, "workflowAbort").finish_time = utcnow()
        return outcome

    def _ask_the_hypervisor(self, migration_id: int) -> Seen | None:
        """Where the journal cannot prove the resize whole, ask the host of the
        first step not done whether the instance's domain is still there.

        NOTE: asked before the abort's transaction, which must not hold the
        server's rows while a host takes its time; the transaction then uses
        the answer only if the step's row has not moved since.
        """
        with self.database.snapshot() as s:
            try:
                _rows, first = _current(s, migration_id)
            except errors.WorkflowNotFailed:
                return None  # the transaction says so, with the migration's status
            flow, step = flows.STEPS[first.step]
            if (
                step.on_abort is not flows.OnAbort.BACK_TO_VERIFY
                or nothing_reached_hypervisor(flow, step, first)
                or first.status in JOURNAL_ENDED - {_J.FAILED}
                or (first.status == _J.RUNNING and journal.lease_live(first))
            ):
                return None
            svc = services.get(s, first.host)
            if svc is not None and not services.is_up(svc, self.settings.service_down_time):
                return None  # a host that is down proves nothing
            key = (first.id, str(first.status), first.attempts, first.host)
        try:
            whole = routing.ask(
                self.app,
                first.host,
                flows.HOST_TASKS.domain_whole,
                first.instance_uuid,
                timeout=self.settings.host_call_timeout,
            )
        except errors.ResizeflowError as exc:
            log.warning("abort of migration %s: %s could not say: %s", migration_id, key[3], exc)
            return None
        return Seen(*key, whole=bool(whole))

    def _end(
        self,
        s: Session,
        caller: RequestContext,
        inst: Instance,
        mig: Migration,
        rows: list[StepJournal],
        first: StepJournal,
        seen: Seen | None,
    ) -> Outcome:
        flow, step = flows.STEPS[first.step]
        short = step.short
        _end_action(s, first)
        proven_whole = seen is not None and seen.whole and seen.still(first)
        if step.on_abort is flows.OnAbort.BACK_TO_VERIFY and (
            proven_whole or nothing_reached_hypervisor(flow, step, first)
        ):
            # Undo the only thing done so far, the network teardown, and let
            # the user decide again. The flow's rows are superseded (kept, as
            # history), so a new confirm or revert can be planned.
            SqlNetwork(s).setup_networks_on_host(inst.uuid, first.host)
            for row in rows:
                journal.end(row, _J.SUPERSEDED)
            if mig.status != MigrationStatus.ERROR:  # a stalled flow ends first...
                mig.status = check_migration(mig.status, MigrationStatus.ERROR)
            mig.status = check_migration(
                mig.status, MigrationStatus.FINISHED
            )  # ...then the resize is back
            inst.vm_state = check_vm(inst.vm_state, VmState.RESIZED)
            inst.task_state = None
            return Outcome(
                mig.id,
                first.flow,
                first.step,
                "compensated",
                f"{first.flow} stopped before {short}: the server is back in VERIFY_RESIZE"
                + (f" ({first.host} still has its domain, whole)" if proven_whole else ""),
            )
        first.restore = None  # nothing left to retry
        for row in rows[rows.index(first) :]:
            if row.status != _J.FAILED:
                journal.end(row, _J.ABORTED, f"aborted by {caller.user_id}")
        if mig.status != MigrationStatus.ERROR:
            mig.status = check_migration(mig.status, MigrationStatus.ERROR)
        if step.on_abort is flows.OnAbort.NOTHING_TO_UNDO:
            old = SystemMetadata(inst).old_vm_state or inst.vm_state
            forget_resize(inst)
            inst.vm_state = check_vm(inst.vm_state, old)
            inst.task_state = None
            return Outcome(
                mig.id,
                first.flow,
                first.step,
                "compensated",
                "the resize never reached the hypervisor: the server keeps its flavor and host",
            )
        if flow.frees_source_on_error:
            # A confirm ends here: the same finally as its error-out (see
            # steps/failure.py), the server staying on the dest.
            SqlPlacement(s).release(mig.uuid, NodeRef(mig.source_compute, mig.source_node))
            forget_resize(inst)
        assert mig.dest_compute is not None  # a flow ran: scheduling chose the dest
        intact, other = mig.source_compute, mig.dest_compute
        if flow.intact_on is flows.Side.DEST:
            intact, other = other, intact
        message = (
            f"Workflow {first.flow} of migration {mig.id} aborted by an operator at {short} "
            f"on {first.host}. The server's intact disks are on {intact} "
            f"({_where(flow, step, inst.uuid)}); {other} may hold leftovers of the resize."
        )
        inst.vm_state = check_vm(inst.vm_state, VmState.ERROR)
        inst.task_state = None
        dbapi.add_fault(s, inst.uuid, errors.Conflict(message), None, message)
        return Outcome(mig.id, first.flow, first.step, "left in error", message)


def nothing_reached_hypervisor(flow: flows.Flow, step: flows.Step, row: StepJournal) -> bool:
    """Whether the journal proves that an abort at ``row`` undoes no hypervisor work.

    NOTE: a step that touches the hypervisor may have done part of its work
    and then failed (the dest domain undefined, then its rmtree failed):
    handing the resize back then would let a confirm delete the source's
    ``_resize``, the last good copy. Only a step no delivery ever claimed is
    proven untouched by the journal; the step's host may prove more (see
    WorkflowAdmin._ask_the_hypervisor). A step that never touches the
    hypervisor is undone by setting its networks up again, unless its flow's
    error-out already freed the source claim and the stash a revert would
    need (a failed confirm).
    """
    if step.touches_hypervisor:
        return row.status == _J.PENDING and row.attempts == 0
    return not (flow.frees_source_on_error and row.status == _J.FAILED)


def _where(flow: flows.Flow, step: flows.Step, uuid: str) -> str:
    """Where on the host of ``flow.intact_on`` the server's disks are, the first
    step not done being ``step``: resize_instance moves them to ``_resize``,
    finish_revert moves them back, and either may have done so before it failed."""
    if flow.intact_on is flows.Side.DEST:
        return f"instance directory {uuid}"
    if step is flows.RESIZE.steps[1]:
        return f"instance directory {uuid}, or {uuid}_resize if the resize moved it"
    if step is flows.REVERT.last:
        return f"instance directory {uuid}_resize, or {uuid} if the revert moved it back"
    return f"instance directory {uuid}_resize"


def _end_action(session: Session, row: StepJournal) -> None:
    """End the aborted flow's instance action: its event in progress fails, and
    the action finishes in error, as a step failing for good would leave it."""
    if row.action_id is None:
        return
    for event in session.scalars(
        select(InstanceActionEvent).where(
            InstanceActionEvent.action_id == row.action_id,
            InstanceActionEvent.result.is_(None),
        )
    ):
        event.result, event.finish_time = "Error", utcnow()
    dbapi.finish_action(session, row.action_id, error=True)
