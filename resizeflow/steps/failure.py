"""Erroring a workflow out when a step has failed for good."""

from __future__ import annotations

from resizeflow import flows
from resizeflow.db import api as dbapi
from resizeflow.states import MIGRATION_TRANSITIONS, MigrationStatus, VmState, check_vm
from resizeflow.steps.context import StepContext


def error_out(ctx: StepContext, task: str, exc: BaseException, details: str) -> None:
    """Instance ERROR with a fault, migration ``error``, task_state reset.

    Runs in its own transaction after the failed step's has rolled back, so
    the step's partial database changes are already gone. A step with nothing
    to undo (it never reached the hypervisor) leaves the server's vm_state as
    it was, as Nova's prep_resize failure leaves it ACTIVE or STOPPED.
    """
    flow, step = flows.STEPS[task]
    inst, mig = ctx.instance, ctx.migration
    if mig is not None and MigrationStatus.ERROR in MIGRATION_TRANSITIONS[mig.status]:
        mig.status = MigrationStatus.ERROR
    if step.on_abort is not flows.OnAbort.NOTHING_TO_UNDO:
        inst.vm_state = check_vm(inst.vm_state, VmState.ERROR)
    if (
        mig is not None
        and flow.frees_source_on_error
        and step.on_abort is flows.OnAbort.LEAVE_IN_ERROR
    ):
        # NOTE: past the point where an abort could hand the resize back, the
        # old flavor's claim on the source is freed now, as Nova's confirm
        # does in a finally: whatever failed, the source copy is being removed.
        ctx.placement.release(mig.uuid, ctx.source)
    inst.task_state = None
    dbapi.add_fault(ctx.session, inst.uuid, exc, ctx.host, details)
    ctx.notify(f"{flow.notify}.error", fault=exc, details=details, priority="ERROR")
    ctx.notify_exception(exc, details)
