"""Erroring a workflow out when a step has failed for good."""

from __future__ import annotations

from resizeflow import errors, flows
from resizeflow.db import api as dbapi
from resizeflow.db import journal
from resizeflow.db.instances import forget_resize
from resizeflow.states import (
    JOURNAL_ENDED,
    MIGRATION_TRANSITIONS,
    JournalStatus,
    MigrationStatus,
    VmState,
    check_vm,
)
from resizeflow.steps.context import StepContext


def error_out(ctx: StepContext, task: str, exc: BaseException, details: str) -> None:
    """Instance ERROR with a fault, migration ``error``, task_state reset.

    Runs in its own transaction after the failed step's has rolled back, so
    the step's partial database changes are already gone. A step with nothing
    to undo (it never reached the hypervisor) leaves the server's vm_state as
    it was, as Nova's prep_resize failure leaves it ACTIVE or STOPPED; so does
    a failure the driver raised before it touched the guest
    (:class:`~resizeflow.errors.InstanceFaultRollback`), which also rolls the
    resize back.
    """
    flow, step = flows.STEPS[task]
    inst, mig = ctx.instance, ctx.migration
    rollback = isinstance(exc, errors.InstanceFaultRollback) and mig is not None
    if isinstance(exc, errors.InstanceFaultRollback):
        exc = exc.inner  # what the fault and the notifications record, as in Nova
    if mig is not None and MigrationStatus.ERROR in MIGRATION_TRANSITIONS[mig.status]:
        mig.status = MigrationStatus.ERROR
    if rollback:
        roll_back_resize(ctx)
    elif step.on_abort is not flows.OnAbort.NOTHING_TO_UNDO:
        inst.vm_state = check_vm(inst.vm_state, VmState.ERROR)
    if mig is not None and flow.frees_source_on_error:
        # NOTE: whatever failed, the server now runs on the dest and its
        # source copy is being removed: the old flavor's claim there is freed
        # and the stashed flavors forgotten now, as Nova's confirm does in a
        # finally. Nothing is left for a revert to go back to.
        ctx.placement.release(mig.uuid, ctx.source)
        forget_resize(inst)
    inst.task_state = None
    dbapi.add_fault(ctx.session, inst.uuid, exc, ctx.host, details)
    ctx.notify(f"{flow.notify}.error", fault=exc, details=details, priority="ERROR")
    ctx.notify_exception(exc, details)


def roll_back_resize(ctx: StepContext) -> None:
    """Undo a resize that never touched the guest, as Nova's InstanceFaultRollback does.

    The server keeps its vm_state, host and flavor; the dest's claim is
    dropped and the source allocation handed back from the migration to the
    instance; the stash is forgotten; the flow's other steps will never run,
    and nothing is left for ``workflow retry`` to resume.
    """
    inst, mig = ctx.instance, ctx.migration
    # NOTE: prep_resize handed the source allocation to the migration; if it
    # never did, the instance still holds it and there is no dest claim
    # (on a same-host resize the node holds both, so the order matters:
    # the new flavor's claim goes first, then the old one comes back).
    if ctx.placement.holds(mig.uuid, ctx.source):
        ctx.placement.release(inst.uuid, ctx.dest)
        ctx.placement.move(mig.uuid, inst.uuid, ctx.source)
    forget_resize(inst)
    ctx.journal.restore = None
    for row in journal.rows(ctx.session, mig.id):
        ended = row.status in JOURNAL_ENDED
        if row.flow == ctx.journal.flow and row is not ctx.journal and not ended:
            journal.end(row, JournalStatus.ABORTED, "the resize was rolled back")
