"""Revert: undo the resize on the dest host, then bring the old domain back on the source."""

from __future__ import annotations

from typing import Any

from resizeflow.db.instances import SystemMetadata, forget_resize
from resizeflow.db.models import utcnow
from resizeflow.states import (
    MigrationStatus,
    PowerState,
    VmState,
    check_migration,
    check_task,
    check_vm,
)
from resizeflow.steps.context import HypervisorWork, PhasedStep, StepContext
from resizeflow.steps.volumes import IN_DOMAIN, connecting, disconnect_now


def teardown_dest_network(ctx: StepContext) -> None:
    # Nova reports the server's usage so far (instance.exists) as a revert begins.
    ctx.notify("exists")
    ctx.notify("resize_revert.start")
    if not ctx.same_host:
        ctx.network.teardown_networks_on_host(ctx.instance.uuid, ctx.dest.host)


def destroy_dest_domain(ctx: StepContext) -> None:
    # The dest's copy goes, unless the source's instances path is this one:
    # then the source's finish_revert removes it as it renames _resize back.
    virt = ctx.virt
    virt.destroy(ctx.spec(), destroy_disks=not virt.shares_resize_source(ctx.instance.uuid))


def terminate_volume_connections(ctx: StepContext) -> None:
    """Cut the dest's connections to the server's volumes: its domain is gone,
    and the source connects them again in finish_revert."""
    disconnect_now(ctx, ctx.dest.host)


def drop_dest_claim(ctx: StepContext) -> None:
    """Free the new flavor's claim and mark the migration reverted, in one transaction."""
    mig = ctx.migration
    ctx.placement.release(ctx.instance.uuid, ctx.dest)
    mig.status = check_migration(mig.status, MigrationStatus.REVERTED)


def finish_revert(ctx: StepContext) -> PhasedStep:
    """Source host: restore the old flavor, allocation, networks, volumes and domain."""
    inst, mig = ctx.instance, ctx.migration
    # NOTE: as Nova's finish_revert_resize, the server's flavor, host and
    # allocation go back to the source before the driver is called, and commit
    # with this first phase. If the domain then never comes back, the server is
    # in ERROR where its disks are, at the flavor they were made for, with its
    # own allocation: a hard reboot there starts from the right view. A retry
    # finds them moved already (the stash of old_vm_state stays until the end,
    # for it).
    ctx.placement.move(mig.uuid, inst.uuid, ctx.source)
    if inst.old_flavor is not None:
        inst.flavor = inst.old_flavor
    inst.old_flavor = inst.new_flavor = None
    inst.host, inst.node = mig.source_compute, mig.source_node
    # Bindings first: the domain's NICs are plugged from them, and the ports'
    # active binding comes back here before the guest starts.
    ctx.network.setup_networks_on_host(inst.uuid, mig.source_compute)
    ctx.network.migrate_instance_finish(inst.uuid, mig.source_compute)
    vols = connecting(ctx, mig.source_compute, *IN_DOMAIN)
    spec, virt = ctx.spec(), ctx.virt
    stopped = SystemMetadata(inst).old_vm_state == VmState.STOPPED

    def restore_domain(deadline: float) -> tuple[PowerState, dict[str, Any]]:
        infos, disks = vols.connect()
        virt.finish_revert_migration(spec, power_on=not stopped, deadline=deadline, volumes=disks)
        return virt.power_state(spec.uuid), infos

    power, infos = yield HypervisorWork("bring the old domain back", restore_domain)
    vols.recorded(ctx, infos)
    inst.power_state = power
    if stopped:
        # NOTE: Nova's finish_revert_resize leaves a stopped server stopped by
        # calling its own stop_instance, whose event and notifications the
        # revert's action and its users see; the domain was never started here.
        ctx.notify("power_off.start")
        ctx.record_event("compute_stop_instance")
        ctx.notify("power_off.end")
    inst.vm_state = check_vm(inst.vm_state, VmState.STOPPED if stopped else VmState.ACTIVE)
    inst.task_state = check_task(inst.task_state, None)
    forget_resize(inst)
    inst.launched_at = utcnow()
    ctx.notify("resize_revert.end")
