"""Confirm: every step runs on the source host and removes what the resize left there."""

from __future__ import annotations

from resizeflow.db.instances import forget_resize
from resizeflow.states import (
    MigrationStatus,
    PowerState,
    TaskState,
    VmState,
    check_migration,
    check_task,
    check_vm,
)
from resizeflow.steps.context import StepContext


def teardown_source_network(ctx: StepContext) -> None:
    ctx.notify("resize_confirm.start")
    # On a same-host resize the source bindings are the instance's live ones.
    if not ctx.same_host:
        ctx.network.teardown_networks_on_host(ctx.instance.uuid, ctx.migration.source_compute)


def confirm_migration(ctx: StepContext) -> None:
    """Remove ``<uuid>_resize``; undefine the old domain unless the resize stayed here."""
    inst = ctx.instance
    ctx.virt.confirm_migration(ctx.spec(inst.old_flavor), same_host=ctx.same_host)


def drop_source_claim(ctx: StepContext) -> None:
    """Free the old flavor's claim and mark the migration confirmed, in one transaction."""
    mig = ctx.migration
    ctx.placement.release(mig.uuid, ctx.source)
    mig.status = check_migration(mig.status, MigrationStatus.CONFIRMED)


def finish_confirm(ctx: StepContext) -> None:
    inst = ctx.instance
    # NOTE: old_vm_state may say STOPPED while the user powered the server on
    # to check it before confirming; the power state decides (as in Nova).
    new_vm = VmState.STOPPED if inst.power_state == PowerState.SHUTDOWN else VmState.ACTIVE
    inst.vm_state = check_vm(inst.vm_state, new_vm)
    # A delete that confirmed first keeps DELETING for the delete that follows.
    if inst.task_state != TaskState.DELETING:
        inst.task_state = check_task(inst.task_state, None)
    forget_resize(inst)
    ctx.notify("resize_confirm.end")
