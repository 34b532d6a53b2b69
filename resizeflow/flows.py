"""The flow table: every operation resizeflow runs, step by step, in one place.

Each :class:`Step` carries its Celery task name (written once, as a literal, so
that grep goes from a chain or a journal row to the step), the function that
does its work, the host it runs on, whether it touches the hypervisor and what
an operator's abort does when it is the first step not done. A :class:`Flow`
is a linear sequence of steps, in the spirit of TaskFlow's linear flows.

Chains (:mod:`resizeflow.routing`), task registration (:mod:`resizeflow.tasks`),
journal planning, error-out, ``workflow retry|abort`` and the reconciler all
read this table; nothing else lists steps or builds their names.

The functions are named as ``module:function`` and resolved only inside a
worker, so the API process reads this table without loading the step code or
libvirt.

The table as a reader sees it (each flow's steps, hosts, what an abort does
and the Nova event of each step) is generated from this module when the docs
are built (:func:`resizeflow.docs_gen.flow_table`): see "The flow table" in
docs/architecture.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from resizeflow.states import TaskState


class Side(StrEnum):
    """Which host runs a step: a migration's source or dest, or the instance's own."""

    SOURCE = "source"
    DEST = "dest"
    INSTANCE = "instance"


class Subject(StrEnum):
    """What a flow's tasks receive: a migration id, or an instance uuid."""

    MIGRATION = "migration"
    INSTANCE = "instance"


class OnAbort(StrEnum):
    """What ``workflow abort`` does when this step is the first one not done.

    The same policy decides what a final failure of the step leaves behind:
    only a step with nothing to undo keeps the server's vm_state.
    """

    # The resize can be handed back, the server returning to VERIFY_RESIZE so
    # the user may confirm or revert again, but only if the journal proves
    # that nothing reached the hypervisor: a step that touches it must never
    # have been claimed (see resizeflow.compute.workflow_admin).
    BACK_TO_VERIFY = "back to verify"
    # The resize never reached the hypervisor: the server keeps flavor, host and state.
    NOTHING_TO_UNDO = "nothing to undo"
    # Leftovers may exist on either host: the server stays in ERROR with a fault.
    LEAVE_IN_ERROR = "leave in error"


@dataclass(frozen=True)
class Step:
    task: str
    fn: str  # "module:function", resolved by the worker
    side: Side
    touches_hypervisor: bool
    on_abort: OnAbort = OnAbort.LEAVE_IN_ERROR
    # Long hypervisor work (a disk copy, a clean shutdown, a boot wait) runs
    # with no row locked, under the step's lease: the function reads its rows,
    # yields the work, and commits its effects once the runner locks them again.
    hypervisor_phase: bool = False
    # The instance action event of the Nova method this step is part of, where
    # it is not simply ``compute_<function>``. Consecutive steps that name the
    # same event make up that one method: its event starts with the first of
    # them and ends, with its result, with the last.
    nova_event: str = ""

    @property
    def short(self) -> str:
        return self.fn.rpartition(":")[2]

    @property
    def event(self) -> str:
        """The instance action event this step is part of, named as Nova's are."""
        return self.nova_event or f"compute_{self.short}"


@dataclass(frozen=True)
class Flow:
    name: str
    subject: Subject
    # The notification prefix of its events: ``instance.<notify>.error`` on error-out.
    notify: str
    steps: tuple[Step, ...]
    # Instance operations: the task_state the service layer sets, which the
    # operation clears when it is done.
    task_state: TaskState | None = None
    # The task states the operation moves through after it (Nova's reboot
    # acknowledges with reboot_pending, then calls the driver in reboot_started).
    later_task_states: tuple[TaskState, ...] = ()
    # A confirm frees the old flavor's allocation on the source and forgets
    # the stashed flavors however it ends, as Nova's confirm does in a
    # ``finally`` (_delete_allocation_after_move, _delete_stashed_flavor_info).
    frees_source_on_error: bool = False
    # Where the server's intact disks are while the flow runs: a resize and a
    # revert leave the source's untouched (as ``<uuid>_resize``, once moved),
    # a confirm removes them, the server running on the dest. A fault that
    # leaves the server in ERROR names this host.
    intact_on: Side = Side.INSTANCE

    @property
    def last(self) -> Step:
        return self.steps[-1]

    @property
    def task_states(self) -> frozenset[TaskState]:
        """The task states an instance operation shows while it runs."""
        if self.task_state is None:
            return frozenset()
        return frozenset({self.task_state, *self.later_task_states})

    def ends_event(self, step: Step) -> bool:
        """Whether ``step`` is the last of the Nova method its event records."""
        at = self.steps.index(step)
        return at == len(self.steps) - 1 or self.steps[at + 1].event != step.event


_S, _D, _I = Side.SOURCE, Side.DEST, Side.INSTANCE
# Nova's confirm_resize runs on the source, its revert_resize on the dest: the
# steps that split each of them share its event.
_CONFIRM_EVENT = "compute_confirm_resize"
_REVERT_EVENT = "compute_revert_resize"

RESIZE = Flow(
    "resize",
    Subject.MIGRATION,
    "resize",
    intact_on=Side.SOURCE,
    steps=(
        Step(
            "resizeflow.resize.prep_resize",
            "resizeflow.steps.resize:prep_resize",
            _D,
            touches_hypervisor=False,
            on_abort=OnAbort.NOTHING_TO_UNDO,
        ),
        Step(
            "resizeflow.resize.resize_instance",
            "resizeflow.steps.resize:resize_instance",
            _S,
            touches_hypervisor=True,
            hypervisor_phase=True,
        ),
        Step(
            "resizeflow.resize.finish_resize",
            "resizeflow.steps.resize:finish_resize",
            _D,
            touches_hypervisor=True,
            hypervisor_phase=True,
        ),
    ),
)

CONFIRM = Flow(
    "confirm",
    Subject.MIGRATION,
    "resize_confirm",
    frees_source_on_error=True,
    intact_on=Side.DEST,
    steps=(
        Step(
            "resizeflow.confirm.teardown_source_network",
            "resizeflow.steps.confirm:teardown_source_network",
            _S,
            nova_event=_CONFIRM_EVENT,
            touches_hypervisor=False,
            on_abort=OnAbort.BACK_TO_VERIFY,
        ),
        Step(
            "resizeflow.confirm.confirm_migration",
            "resizeflow.steps.confirm:confirm_migration",
            _S,
            nova_event=_CONFIRM_EVENT,
            touches_hypervisor=True,
        ),
        Step(
            "resizeflow.confirm.drop_source_claim",
            "resizeflow.steps.confirm:drop_source_claim",
            _S,
            nova_event=_CONFIRM_EVENT,
            touches_hypervisor=False,
        ),
        Step(
            "resizeflow.confirm.finish_confirm",
            "resizeflow.steps.confirm:finish_confirm",
            _S,
            nova_event=_CONFIRM_EVENT,
            touches_hypervisor=False,
        ),
    ),
)

# NOTE: everything on the dest comes first, so the source is only touched once
# the new domain is gone and its claim is freed; finish_revert can then take
# the old flavor back without racing the dest for the instance.
REVERT = Flow(
    "revert",
    Subject.MIGRATION,
    "resize_revert",
    intact_on=Side.SOURCE,
    steps=(
        Step(
            "resizeflow.revert.teardown_dest_network",
            "resizeflow.steps.revert:teardown_dest_network",
            _D,
            nova_event=_REVERT_EVENT,
            touches_hypervisor=False,
            on_abort=OnAbort.BACK_TO_VERIFY,
        ),
        # An abort before the dest domain is destroyed still finds the resized
        # server whole on the dest, so the resize can be handed back.
        Step(
            "resizeflow.revert.destroy_dest_domain",
            "resizeflow.steps.revert:destroy_dest_domain",
            _D,
            nova_event=_REVERT_EVENT,
            touches_hypervisor=True,
            on_abort=OnAbort.BACK_TO_VERIFY,
        ),
        Step(
            "resizeflow.revert.terminate_volume_connections",
            "resizeflow.steps.revert:terminate_volume_connections",
            _D,
            nova_event=_REVERT_EVENT,
            touches_hypervisor=False,
        ),
        Step(
            "resizeflow.revert.drop_dest_claim",
            "resizeflow.steps.revert:drop_dest_claim",
            _D,
            nova_event=_REVERT_EVENT,
            touches_hypervisor=False,
        ),
        Step(
            "resizeflow.revert.finish_revert",
            "resizeflow.steps.revert:finish_revert",
            _S,
            nova_event="compute_finish_revert_resize",
            touches_hypervisor=True,
            hypervisor_phase=True,
        ),
    ),
)


def _instance_op(
    name: str,
    notify: str,
    task_state: TaskState | None,
    task: str,
    fn: str,
    event: str,
    phase: bool,
    later: tuple[TaskState, ...] = (),
) -> Flow:
    step = Step(task, fn, _I, touches_hypervisor=True, nova_event=event, hypervisor_phase=phase)
    return Flow(name, Subject.INSTANCE, notify, (step,), task_state, later_task_states=later)


SPAWN = _instance_op(
    "spawn",
    "create",
    TaskState.SPAWNING,
    "resizeflow.instance.spawn",
    "resizeflow.steps.instance:spawn",
    "compute__do_build_and_run_instance",
    phase=True,
)
STOP = _instance_op(
    "stop",
    "power_off",
    TaskState.POWERING_OFF,
    "resizeflow.instance.stop",
    "resizeflow.steps.instance:stop",
    "compute_stop_instance",
    phase=True,
)
START = _instance_op(
    "start",
    "power_on",
    TaskState.POWERING_ON,
    "resizeflow.instance.start",
    "resizeflow.steps.instance:start",
    "compute_start_instance",
    phase=True,
)
SOFT_REBOOT = _instance_op(
    "soft_reboot",
    "reboot",
    TaskState.REBOOTING,
    "resizeflow.instance.soft_reboot",
    "resizeflow.steps.instance:soft_reboot",
    "compute_reboot_instance",
    phase=True,
    later=(TaskState.REBOOT_PENDING, TaskState.REBOOT_STARTED),
)
HARD_REBOOT = _instance_op(
    "hard_reboot",
    "reboot",
    TaskState.REBOOTING_HARD,
    "resizeflow.instance.hard_reboot",
    "resizeflow.steps.instance:hard_reboot",
    "compute_reboot_instance",
    phase=True,
    later=(TaskState.REBOOT_PENDING_HARD, TaskState.REBOOT_STARTED_HARD),
)
DELETE = _instance_op(
    "delete",
    "delete",
    TaskState.DELETING,
    "resizeflow.instance.delete",
    "resizeflow.steps.instance:delete",
    "compute_terminate_instance",
    phase=False,
)
# NOTE: Nova shows no task_state while a volume is attached or detached; the
# service layer refuses other work on the server while one is open instead
# (resizeflow.compute.volumes).
ATTACH_VOLUME = _instance_op(
    "attach_volume",
    "volume_attach",
    None,
    "resizeflow.instance.attach_volume",
    "resizeflow.steps.instance:attach_volume",
    "compute_attach_volume",
    phase=True,
)
DETACH_VOLUME = _instance_op(
    "detach_volume",
    "volume_detach",
    None,
    "resizeflow.instance.detach_volume",
    "resizeflow.steps.instance:detach_volume",
    "compute_detach_volume",
    phase=True,
)

FLOWS: dict[str, Flow] = {
    flow.name: flow
    for flow in (
        RESIZE,
        CONFIRM,
        REVERT,
        SPAWN,
        STOP,
        START,
        SOFT_REBOOT,
        HARD_REBOOT,
        DELETE,
        ATTACH_VOLUME,
        DETACH_VOLUME,
    )
}

STEPS: dict[str, tuple[Flow, Step]] = {
    step.task: (flow, step) for flow in FLOWS.values() for step in flow.steps
}


def step(task: str) -> Step:
    """The step a Celery task name (or a journal row's ``step``) names."""
    return STEPS[task][1]


def flow_of(task: str) -> Flow:
    return STEPS[task][0]


@dataclass(frozen=True)
class HostTasks:
    """Tasks that are not steps of a flow: cleaning a host after a deleted server,
    and the calls whose answer a request waits for."""

    purge_instance_files: str = "resizeflow.host.purge_instance_files"
    finish_cleanup: str = "resizeflow.host.finish_cleanup"
    # Calls that answer (see resizeflow.hostcall): a guest's console log, and
    # whether a domain is still whole (an abort's proof).
    console_output: str = "resizeflow.host.console_output"
    domain_whole: str = "resizeflow.host.domain_whole"


HOST_TASKS = HostTasks()
