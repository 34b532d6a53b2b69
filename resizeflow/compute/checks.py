"""Nova's checks in front of every action: the instance's state, its lock, its host's service."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy.orm import Session

from resizeflow import errors
from resizeflow.compute.policy import RequestContext
from resizeflow.db import services
from resizeflow.db.models import Instance
from resizeflow.states import TaskState, VmState


def check_instance_state(
    inst: Instance,
    method: str,
    vm_state: Collection[VmState] | None = None,
    task_state: Collection[TaskState | None] | None = (None,),
) -> None:
    """Nova's ``check_instance_state`` decorator, as a call."""
    if vm_state is not None and inst.vm_state not in vm_state:
        raise errors.InstanceInvalidState(
            attr="vm_state", instance_uuid=inst.uuid, state=inst.vm_state.value, method=method
        )
    if task_state is not None and inst.task_state not in task_state:
        raise errors.InstanceInvalidState(
            attr="task_state",
            instance_uuid=inst.uuid,
            state=inst.task_state.value if inst.task_state else None,
            method=method,
        )


def check_instance_lock(caller: RequestContext, inst: Instance) -> None:
    if inst.locked and not caller.is_admin:
        raise errors.InstanceIsLocked(instance_uuid=inst.uuid)


def check_service_up(session: Session, host: str, service_down_time: float) -> None:
    """Refuse work for a host whose worker is down, as Nova does (409).

    Sending it anyway would leave the workflow waiting in a queue nobody
    reads, with the migration already moved on.
    """
    svc = services.get(session, host)
    if svc is not None and not services.is_up(svc, service_down_time):
        raise errors.ServiceUnavailable()
