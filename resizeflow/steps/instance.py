"""Single-step operations on one instance: spawn, stop, start and delete.

Each is a one-step flow of the table in :mod:`resizeflow.flows`, journaled
like the others. It runs only while the instance still shows the task_state
the service layer set (the flow's ``task_state``).
"""

from __future__ import annotations

from resizeflow.db.models import utcnow
from resizeflow.states import VmState, check_task, check_vm
from resizeflow.steps.context import InstanceContext


def spawn(ctx: InstanceContext) -> None:
    inst = ctx.instance
    ctx.notify("create.start")
    assert inst.host is not None
    ctx.network.setup_networks_on_host(inst.uuid, inst.host)
    ctx.volumes.initialize_connections(inst.uuid, inst.host)
    ctx.virt.spawn(ctx.spec(), power_on=True)
    inst.power_state = ctx.virt.power_state(inst.uuid)
    inst.vm_state = check_vm(inst.vm_state, VmState.ACTIVE)
    inst.task_state = check_task(inst.task_state, None)
    inst.launched_at = utcnow()
    ctx.notify("create.end")


def stop(ctx: InstanceContext) -> None:
    inst = ctx.instance
    ctx.notify("power_off.start")
    ctx.virt.power_off(ctx.spec())
    inst.power_state = ctx.virt.power_state(inst.uuid)
    inst.vm_state = check_vm(inst.vm_state, VmState.STOPPED)
    inst.task_state = check_task(inst.task_state, None)
    ctx.notify("power_off.end")


def start(ctx: InstanceContext) -> None:
    inst = ctx.instance
    ctx.notify("power_on.start")
    ctx.virt.power_on(ctx.spec())
    inst.power_state = ctx.virt.power_state(inst.uuid)
    inst.vm_state = check_vm(inst.vm_state, VmState.ACTIVE)
    inst.task_state = check_task(inst.task_state, None)
    ctx.notify("power_on.end")


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
