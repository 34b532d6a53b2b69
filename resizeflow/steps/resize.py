"""Resize: claim on the dest, move the disk off the source, finish on the dest."""

from __future__ import annotations

from typing import Any

from resizeflow.db.instances import SystemMetadata
from resizeflow.openstack import volume
from resizeflow.openstack.base import Resources
from resizeflow.states import (
    MigrationStatus,
    PowerState,
    TaskState,
    VmState,
    check_migration,
    check_task,
    check_vm,
)
from resizeflow.steps.context import HypervisorWork, PhasedStep, StepContext
from resizeflow.steps.volumes import IN_DOMAIN, connecting


def prep_resize(ctx: StepContext) -> None:
    """Dest host: claim the new flavor."""
    inst, mig = ctx.instance, ctx.migration
    ctx.notify("resize_prep.start")
    ctx.placement.lock(ctx.source, ctx.dest)
    # NOTE: the instance's source allocation is handed to the migration first,
    # so the instance never holds two allocations and a revert can hand it back
    # (Nova's migration-based allocations). Same-host resizes hold both
    # allocations on one node until confirm or revert, as Nova does.
    ctx.placement.move(inst.uuid, mig.uuid, ctx.source)
    assert inst.new_flavor is not None
    ctx.placement.claim(inst.uuid, ctx.dest, Resources.of_flavor(inst.new_flavor))
    inst.task_state = check_task(inst.task_state, TaskState.RESIZE_MIGRATING)
    ctx.notify("resize_prep.end")


def resize_instance(ctx: StepContext) -> PhasedStep:
    """Source host: power off, keep the old dir as ``<uuid>_resize``, copy the disk
    over, and cut the source's volume connections."""
    inst, mig = ctx.instance, ctx.migration
    assert inst.old_flavor is not None
    spec, virt = ctx.spec(inst.old_flavor), ctx.virt
    dest = ctx.peer(ctx.dest.host)
    volumes, storage, source = ctx.volumes.of(inst.uuid), ctx.runtime.storage, ctx.host
    # Committed before the copy, so the migration shows `migrating` while it
    # runs; a repeat of this step finds it so already.
    mig.status = check_migration(mig.status, MigrationStatus.MIGRATING)
    ctx.notify("resize.start")

    def power_off_and_copy(deadline: float) -> PowerState:
        virt.migrate_disk_and_power_off(spec, dest, deadline=deadline)
        # NOTE: only once the guest is off: it wrote to its volumes until then.
        # The record still names the source until this step commits, so a
        # redelivery terminates again (a no-op) rather than leave a connection.
        volume.disconnect(storage, volumes, source)
        return virt.power_state(spec.uuid)

    power = yield HypervisorWork("power off, copy the disk, cut the volumes", power_off_and_copy)
    ctx.volumes.record_disconnected(volumes, source)
    inst.power_state = power
    mig.status = check_migration(mig.status, MigrationStatus.POST_MIGRATING)
    inst.task_state = check_task(inst.task_state, TaskState.RESIZE_MIGRATED)
    ctx.notify("resize.end")


def finish_resize(ctx: StepContext) -> PhasedStep:
    """Dest host: bind networks and connect volumes here, start the domain at the new flavor."""
    inst, mig = ctx.instance, ctx.migration
    # Bindings first: the domain's NICs are plugged from them, and the ports'
    # active binding moves here before the guest starts (Nova's
    # migrate_instance_finish).
    ctx.network.setup_networks_on_host(inst.uuid, ctx.dest.host)
    ctx.network.migrate_instance_finish(inst.uuid, ctx.dest.host)
    vols = connecting(ctx, ctx.dest.host, *IN_DOMAIN)
    inst.task_state = check_task(inst.task_state, TaskState.RESIZE_FINISH)
    ctx.notify("resize_finish.start")
    assert inst.new_flavor is not None
    spec, virt = ctx.spec(inst.new_flavor), ctx.virt
    power_on = SystemMetadata(inst).old_vm_state != VmState.STOPPED

    def start_at_new_flavor(deadline: float) -> tuple[PowerState, dict[str, Any]]:
        infos, disks = vols.connect()
        virt.finish_migration(spec, power_on=power_on, deadline=deadline, volumes=disks)
        return virt.power_state(spec.uuid), infos

    power, infos = yield HypervisorWork("start the domain at the new flavor", start_at_new_flavor)
    vols.recorded(ctx, infos)
    assert inst.new_flavor is not None
    inst.flavor = inst.new_flavor
    inst.host, inst.node = ctx.dest.host, ctx.dest.node
    inst.power_state = power
    inst.vm_state = check_vm(inst.vm_state, VmState.RESIZED)
    inst.task_state = check_task(inst.task_state, None)
    mig.status = check_migration(mig.status, MigrationStatus.FINISHED)
    ctx.notify("resize_finish.end")
