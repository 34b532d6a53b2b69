"""Erroring a workflow out when a step has failed for good."""

from __future__ import annotations

from resizeflow.db import api as db
from resizeflow.states import MIGRATION_TRANSITIONS, MigrationStatus, VmState, check_vm
from resizeflow.steps.context import StepContext

# Steps that fail before touching the hypervisor: the server keeps its
# vm_state, as Nova's prep_resize failure leaves it ACTIVE or STOPPED.
NO_HYPERVISOR_CHANGE = frozenset({"resizeflow.resize.prep_resize"})

_EVENT = {"resize": "resize", "confirm": "resize_confirm", "revert": "resize_revert"}


def error_out(ctx: StepContext, step: str, exc: BaseException, details: str) -> None:
    """Instance ERROR with a fault, migration ``error``, task_state reset.

    Runs in its own transaction after the failed step's has rolled back, so
    the step's partial database changes are already gone.
    """
    inst, mig = ctx.instance, ctx.migration
    if MigrationStatus.ERROR in MIGRATION_TRANSITIONS[mig.status]:
        mig.status = MigrationStatus.ERROR
    if step not in NO_HYPERVISOR_CHANGE:
        inst.vm_state = check_vm(inst.vm_state, VmState.ERROR)
    inst.task_state = None
    db.add_fault(ctx.session, inst.uuid, exc, ctx.host, details)
    flow = step.split(".")[1]
    ctx.notify(f"{_EVENT.get(flow, flow)}.error", fault=exc, details=details, priority="ERROR")
    ctx.notify_exception(exc, details)
