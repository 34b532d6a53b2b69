"""Single-step operations on one instance: spawn, stop, start, reboot, delete,
and attaching and detaching a volume.

Each is a one-step flow of the table in :mod:`resizeflow.flows`, journaled
like the others. It runs only while the instance still shows the task_state
the service layer set (the flow's ``task_state``).
"""

from __future__ import annotations

from typing import Any

from resizeflow.db.models import utcnow
from resizeflow.openstack import volume
from resizeflow.states import PowerState, TaskState, VmState, check_task, check_vm
from resizeflow.steps.context import HypervisorWork, InstanceContext, PhasedStep
from resizeflow.steps.volumes import IN_DOMAIN, Connecting, connecting, detach_all_now, reaching


def _connect_here(ctx: InstanceContext, *status: str) -> Connecting:
    """Bind the instance's ports on its own host and name it as its volumes'
    host, before its domain is defined: the domain's NICs and disks are made
    from them (the volumes are connected in the hypervisor work)."""
    inst = ctx.instance
    assert inst.host is not None
    ctx.network.setup_networks_on_host(inst.uuid, inst.host)
    ctx.network.migrate_instance_finish(inst.uuid, inst.host)
    return connecting(ctx, inst.host, *status)


def spawn(ctx: InstanceContext) -> PhasedStep:
    inst = ctx.instance
    ctx.notify("create.start")
    # Every attachment: those of its block_device_mapping_v2 are reserved.
    vols = _connect_here(ctx)
    ctx.volumes.record_attaching(vols.volumes)
    spec, virt = ctx.spec(), ctx.virt

    def boot(deadline: float) -> tuple[PowerState, dict[str, Any]]:
        infos, disks = vols.connect()
        virt.spawn(spec, power_on=True, deadline=deadline, volumes=disks)
        return virt.power_state(spec.uuid), infos

    inst.power_state, infos = yield HypervisorWork("boot the domain", boot)
    vols.recorded(ctx, infos)
    ctx.volumes.record_attached(vols.volumes)
    inst.vm_state = check_vm(inst.vm_state, VmState.ACTIVE)
    inst.task_state = check_task(inst.task_state, None)
    inst.launched_at = utcnow()
    ctx.notify("create.end")


def stop(ctx: InstanceContext) -> PhasedStep:
    yield from _power(ctx, "power_off", "shut the domain down", VmState.STOPPED)


def start(ctx: InstanceContext) -> PhasedStep:
    yield from _power(ctx, "power_on", "start the domain", VmState.ACTIVE)


def _power(ctx: InstanceContext, event: str, what: str, vm_state: VmState) -> PhasedStep:
    ctx.notify(f"{event}.start")
    spec, virt = ctx.spec(), ctx.virt
    change = virt.power_off if vm_state is VmState.STOPPED else virt.power_on

    def work(deadline: float) -> PowerState:
        change(spec, deadline=deadline)
        return virt.power_state(spec.uuid)

    inst = ctx.instance
    inst.power_state = yield HypervisorWork(what, work)
    inst.vm_state = check_vm(inst.vm_state, vm_state)
    inst.task_state = check_task(inst.task_state, None)
    ctx.notify(f"{event}.end")


def soft_reboot(ctx: InstanceContext) -> PhasedStep:
    yield from _reboot(ctx, hard=False)


def hard_reboot(ctx: InstanceContext) -> PhasedStep:
    yield from _reboot(ctx, hard=True)


def _reboot(ctx: InstanceContext, *, hard: bool) -> PhasedStep:
    """Nova's reboot_instance: acknowledge it, then have the driver reboot.

    The server is ACTIVE afterwards whatever it was: a hard reboot starts a
    stopped server, and is the way out of ERROR. It rebuilds the domain from
    the database's view of the server, so its networks and volumes are set
    up on its host first, as Nova plugs its VIFs again.
    """
    inst = ctx.instance
    ctx.notify("reboot.start")
    pending = TaskState.REBOOT_PENDING_HARD if hard else TaskState.REBOOT_PENDING
    started = TaskState.REBOOT_STARTED_HARD if hard else TaskState.REBOOT_STARTED
    if inst.task_state not in (pending, started):  # a retry finds it acknowledged
        inst.task_state = check_task(inst.task_state, pending)
    if inst.task_state != started:
        inst.task_state = check_task(inst.task_state, started)
    vols = _connect_here(ctx, *IN_DOMAIN) if hard else None
    spec, virt = ctx.spec(), ctx.virt

    def work(deadline: float) -> tuple[PowerState, dict[str, Any]]:
        infos, disks = vols.connect() if vols is not None else ({}, ())
        virt.reboot(spec, hard=hard, deadline=deadline, volumes=disks)
        return virt.power_state(spec.uuid), infos

    inst.power_state, infos = yield HypervisorWork("hard reboot" if hard else "soft reboot", work)
    if vols is not None:
        vols.recorded(ctx, infos)
    inst.vm_state = check_vm(inst.vm_state, VmState.ACTIVE)
    inst.task_state = check_task(inst.task_state, None)
    ctx.notify("reboot.end")


def delete(ctx: InstanceContext) -> None:
    inst = ctx.instance
    ctx.notify("delete.start")
    ctx.virt.destroy(ctx.spec(), destroy_disks=True)
    ctx.network.deallocate_for_instance(inst.uuid)
    # After the domain is gone: the guest no longer writes to its volumes.
    detach_all_now(ctx)
    ctx.placement.release_everywhere(inst.uuid)
    inst.vm_state = check_vm(inst.vm_state, VmState.DELETED)
    inst.task_state = check_task(inst.task_state, None)
    inst.deleted, inst.deleted_at = True, utcnow()
    ctx.notify("delete.end")


def attach_volume(ctx: InstanceContext) -> PhasedStep:
    """Nova's attach_volume: connect this host to the reserved volumes and give
    them to the domain (running or stopped); they are ``in-use`` afterwards."""
    inst = ctx.instance
    assert inst.host is not None
    vols = connecting(ctx, inst.host, "reserved", "attaching")
    ctx.volumes.record_attaching(vols.volumes)
    for vol in vols.volumes:
        ctx.notify("volume_attach.start", volume_id=vol.volume_id)
    virt, uuid = ctx.virt, inst.uuid

    def attach(deadline: float) -> tuple[dict[str, Any], dict[str, str]]:
        infos, disks = vols.connect()
        return infos, {disk.volume_id: virt.attach_volume(uuid, disk) for disk in disks}

    infos, devices = yield HypervisorWork("attach the volumes", attach)
    vols.recorded(ctx, infos)
    # The guest's device, where another disk had the one asked for.
    ctx.volumes.record_devices(devices)
    ctx.volumes.record_attached(vols.volumes)
    for vol in vols.volumes:
        ctx.notify("volume_attach.end", volume_id=vol.volume_id)


def detach_volume(ctx: InstanceContext) -> PhasedStep:
    """Nova's detach_volume: take the detaching volumes out of the domain, then
    cut every connection to them; they are ``available`` afterwards, with their data."""
    inst = ctx.instance
    leaving = ctx.volumes.of(inst.uuid, "detaching")
    for vol in leaving:
        ctx.notify("volume_detach.start", volume_id=vol.volume_id)
    virt, storage, uuid = ctx.virt, ctx.runtime.storage, inst.uuid
    hosts = reaching(leaving, ctx.host)

    def detach(deadline: float) -> None:
        for vol in leaving:
            virt.detach_volume(uuid, vol.volume_id, deadline=deadline)
        # NOTE: only once the guest let go: it may write until then.
        for host in hosts:
            volume.disconnect(storage, leaving, host)

    yield HypervisorWork("detach the volumes", detach)
    ctx.volumes.record_detached(leaving)
    for vol in leaving:
        ctx.notify("volume_detach.end", volume_id=vol.volume_id)
