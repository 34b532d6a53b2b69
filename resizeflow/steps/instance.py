"""Single-step operations on one instance: spawn, stop, start, reboot and delete.

Each is a one-step flow of the table in :mod:`resizeflow.flows`, journaled
like the others. It runs only while the instance still shows the task_state
the service layer set (the flow's ``task_state``).
"""

from __future__ import annotations

from resizeflow.db.models import utcnow
from resizeflow.states import PowerState, TaskState, VmState, check_task, check_vm
from resizeflow.steps.context import HypervisorWork, InstanceContext, PhasedStep


def _connect_here(ctx: InstanceContext) -> None:
    """Bind the instance's ports and connect its volumes on its own host, before
    its domain is defined: the domain's NICs and disks are made from them."""
    inst = ctx.instance
    assert inst.host is not None
    ctx.network.setup_networks_on_host(inst.uuid, inst.host)
    ctx.volumes.initialize_connections(inst.uuid, inst.host)


def spawn(ctx: InstanceContext) -> PhasedStep:
    inst = ctx.instance
    ctx.notify("create.start")
    _connect_here(ctx)
    spec, virt = ctx.spec(), ctx.virt

    def boot(deadline: float) -> PowerState:
        virt.spawn(spec, power_on=True, deadline=deadline)
        return virt.power_state(spec.uuid)

    inst.power_state = yield HypervisorWork("boot the domain", boot)
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
    if hard:
        _connect_here(ctx)
    spec, virt = ctx.spec(), ctx.virt

    def work(deadline: float) -> PowerState:
        virt.reboot(spec, hard=hard, deadline=deadline)
        return virt.power_state(spec.uuid)

    inst.power_state = yield HypervisorWork("hard reboot" if hard else "soft reboot", work)
    inst.vm_state = check_vm(inst.vm_state, VmState.ACTIVE)
    inst.task_state = check_task(inst.task_state, None)
    ctx.notify("reboot.end")


def delete(ctx: InstanceContext) -> None:
    inst = ctx.instance
    ctx.notify("delete.start")
    ctx.virt.destroy(ctx.spec(), destroy_disks=True)
    ctx.network.deallocate_for_instance(inst.uuid)
    ctx.volumes.detach_all(inst.uuid)
    ctx.placement.release_everywhere(inst.uuid)
    inst.vm_state = check_vm(inst.vm_state, VmState.DELETED)
    inst.task_state = check_task(inst.task_state, None)
    inst.deleted, inst.deleted_at = True, utcnow()
    ctx.notify("delete.end")
