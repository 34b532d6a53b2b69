"""Instance and migration states, and the transitions between them, as tables.

Values are Nova's strings, so rows and notifications read the same as Nova's.
Every state change in the code goes through :func:`check`; a test walks every
pair of states against these tables.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum

from resizeflow.errors import InvalidStateTransition


class VmState(StrEnum):
    ACTIVE = "active"
    BUILDING = "building"
    STOPPED = "stopped"
    RESIZED = "resized"
    ERROR = "error"
    DELETED = "deleted"


class TaskState(StrEnum):
    SCHEDULING = "scheduling"
    SPAWNING = "spawning"
    RESIZE_PREP = "resize_prep"
    RESIZE_MIGRATING = "resize_migrating"
    RESIZE_MIGRATED = "resize_migrated"
    RESIZE_FINISH = "resize_finish"
    RESIZE_REVERTING = "resize_reverting"
    POWERING_OFF = "powering-off"
    POWERING_ON = "powering-on"
    REBOOTING = "rebooting"
    REBOOT_PENDING = "reboot_pending"
    REBOOT_STARTED = "reboot_started"
    REBOOTING_HARD = "rebooting_hard"
    REBOOT_PENDING_HARD = "reboot_pending_hard"
    REBOOT_STARTED_HARD = "reboot_started_hard"
    DELETING = "deleting"


class PowerState(IntEnum):
    NOSTATE = 0
    RUNNING = 1
    PAUSED = 3
    SHUTDOWN = 4
    CRASHED = 6
    SUSPENDED = 7


class MigrationStatus(StrEnum):
    PRE_MIGRATING = "pre-migrating"
    MIGRATING = "migrating"
    POST_MIGRATING = "post-migrating"
    FINISHED = "finished"
    CONFIRMING = "confirming"
    CONFIRMED = "confirmed"
    REVERTING = "reverting"
    REVERTED = "reverted"
    ERROR = "error"
    # Nova's mark for an errored migration whose leftovers have been cleaned up.
    FAILED = "failed"


class JournalStatus(StrEnum):
    """A step journal row's status: the engine's own record of a step."""

    PENDING = "pending"  # planned, not started
    RUNNING = "running"  # claimed by a worker, under a lease
    RETRYING = "retrying"  # failed transiently; a retry is queued
    DONE = "done"
    FAILED = "failed"  # failed for good; the workflow errored out
    ABORTED = "aborted"  # an operator (or a delete) ended the workflow before it ran
    # An abort handed the resize back to the user: the row stays, as history,
    # and a new confirm or revert plans rows of its own.
    SUPERSEDED = "superseded"


VM_TRANSITIONS: dict[VmState, frozenset[VmState]] = {
    VmState.BUILDING: frozenset({VmState.ACTIVE, VmState.STOPPED, VmState.ERROR, VmState.DELETED}),
    VmState.ACTIVE: frozenset({VmState.STOPPED, VmState.RESIZED, VmState.ERROR, VmState.DELETED}),
    VmState.STOPPED: frozenset({VmState.ACTIVE, VmState.RESIZED, VmState.ERROR, VmState.DELETED}),
    # A resized server ends as ACTIVE or STOPPED after confirm or revert.
    VmState.RESIZED: frozenset({VmState.ACTIVE, VmState.STOPPED, VmState.ERROR, VmState.DELETED}),
    # Out of ERROR: Nova's reset-state, a delete, or an operator's workflow
    # retry or abort putting back the state a failed step started from.
    VmState.ERROR: frozenset({VmState.ACTIVE, VmState.STOPPED, VmState.RESIZED, VmState.DELETED}),
    VmState.DELETED: frozenset(),
}

_T = TaskState
# The task states a hard reboot may take over, as Nova's ALLOW_REBOOT: a soft
# reboot in any of its phases, and a hard reboot its compute has not taken yet.
REBOOT_OVERRIDABLE: frozenset[TaskState | None] = frozenset(
    {None, _T.REBOOTING, _T.REBOOT_PENDING, _T.REBOOT_STARTED, _T.REBOOTING_HARD}
)

# None is "no task in progress". Any task may be cleared back to None: on
# success, and when a workflow errors out and resets the task_state.
TASK_TRANSITIONS: dict[TaskState | None, frozenset[TaskState | None]] = {
    None: frozenset(
        {
            TaskState.SCHEDULING,
            TaskState.RESIZE_PREP,
            TaskState.RESIZE_REVERTING,
            TaskState.POWERING_OFF,
            TaskState.POWERING_ON,
            TaskState.REBOOTING,
            TaskState.REBOOTING_HARD,
            TaskState.DELETING,
        }
    ),
    # A delete is accepted in any task_state, as Nova accepts it; the service
    # layer ends the workflow in flight (see ComputeAPI.delete).
    TaskState.SCHEDULING: frozenset({None, TaskState.SPAWNING, TaskState.DELETING}),
    TaskState.SPAWNING: frozenset({None, TaskState.DELETING}),
    TaskState.RESIZE_PREP: frozenset({None, TaskState.RESIZE_MIGRATING, TaskState.DELETING}),
    TaskState.RESIZE_MIGRATING: frozenset({None, TaskState.RESIZE_MIGRATED, TaskState.DELETING}),
    TaskState.RESIZE_MIGRATED: frozenset({None, TaskState.RESIZE_FINISH, TaskState.DELETING}),
    TaskState.RESIZE_FINISH: frozenset({None, TaskState.DELETING}),
    TaskState.RESIZE_REVERTING: frozenset({None, TaskState.DELETING}),
    TaskState.POWERING_OFF: frozenset({None, TaskState.DELETING}),
    TaskState.POWERING_ON: frozenset({None, TaskState.DELETING}),
    # Nova's reboot: the API's state, the compute's acknowledgement, the
    # driver's call; a hard reboot may take a soft one over at any point.
    _T.REBOOTING: frozenset({None, _T.REBOOT_PENDING, _T.REBOOTING_HARD, _T.DELETING}),
    _T.REBOOT_PENDING: frozenset({None, _T.REBOOT_STARTED, _T.REBOOTING_HARD, _T.DELETING}),
    _T.REBOOT_STARTED: frozenset({None, _T.REBOOTING_HARD, _T.DELETING}),
    _T.REBOOTING_HARD: frozenset({None, _T.REBOOT_PENDING_HARD, _T.DELETING}),
    _T.REBOOT_PENDING_HARD: frozenset({None, _T.REBOOT_STARTED_HARD, _T.DELETING}),
    _T.REBOOT_STARTED_HARD: frozenset({None, _T.DELETING}),
    TaskState.DELETING: frozenset({None}),
}

MIGRATION_TRANSITIONS: dict[MigrationStatus, frozenset[MigrationStatus]] = {
    MigrationStatus.PRE_MIGRATING: frozenset({MigrationStatus.MIGRATING, MigrationStatus.ERROR}),
    MigrationStatus.MIGRATING: frozenset({MigrationStatus.POST_MIGRATING, MigrationStatus.ERROR}),
    MigrationStatus.POST_MIGRATING: frozenset({MigrationStatus.FINISHED, MigrationStatus.ERROR}),
    MigrationStatus.FINISHED: frozenset(
        {MigrationStatus.CONFIRMING, MigrationStatus.REVERTING, MigrationStatus.ERROR}
    ),
    MigrationStatus.CONFIRMING: frozenset({MigrationStatus.CONFIRMED, MigrationStatus.ERROR}),
    MigrationStatus.REVERTING: frozenset({MigrationStatus.REVERTED, MigrationStatus.ERROR}),
    MigrationStatus.CONFIRMED: frozenset(),
    # finish_revert runs after the migration is already `reverted`; when it
    # fails for good the migration is marked `error` so that it shows up.
    MigrationStatus.REVERTED: frozenset({MigrationStatus.ERROR}),
    # An operator's `workflow retry` puts a migration back where its workflow
    # failed, and `workflow abort` may hand a resize back to the user
    # (finished); cleanup of a deleted server's leftovers ends it as failed.
    MigrationStatus.ERROR: frozenset(
        {
            MigrationStatus.FAILED,
            MigrationStatus.PRE_MIGRATING,
            MigrationStatus.MIGRATING,
            MigrationStatus.POST_MIGRATING,
            MigrationStatus.FINISHED,
            MigrationStatus.CONFIRMING,
            MigrationStatus.CONFIRMED,
            MigrationStatus.REVERTING,
            MigrationStatus.REVERTED,
        }
    ),
    MigrationStatus.FAILED: frozenset(),
}

MIGRATION_TERMINAL = frozenset(
    {
        MigrationStatus.CONFIRMED,
        MigrationStatus.REVERTED,
        MigrationStatus.ERROR,
        MigrationStatus.FAILED,
    }
)

# Migrations that still hold a claim on their source node.
MIGRATION_IN_PROGRESS = frozenset(
    {
        MigrationStatus.PRE_MIGRATING,
        MigrationStatus.MIGRATING,
        MigrationStatus.POST_MIGRATING,
        MigrationStatus.FINISHED,
        MigrationStatus.CONFIRMING,
        MigrationStatus.REVERTING,
    }
)


_J = JournalStatus
JOURNAL_TRANSITIONS: dict[JournalStatus, frozenset[JournalStatus]] = {
    # A pending step is claimed, or ended by an operator before it ran.
    _J.PENDING: frozenset({_J.RUNNING, _J.ABORTED, _J.SUPERSEDED}),
    # RUNNING -> RUNNING: a copy whose lease lapsed is taken over by another.
    _J.RUNNING: frozenset({_J.RUNNING, _J.DONE, _J.RETRYING, _J.FAILED, _J.ABORTED, _J.SUPERSEDED}),
    _J.RETRYING: frozenset({_J.RUNNING, _J.FAILED, _J.ABORTED, _J.SUPERSEDED}),
    # Only an abort that hands the resize back touches a done step's row.
    _J.DONE: frozenset({_J.SUPERSEDED}),
    # An operator's retry plans the failed step again.
    _J.FAILED: frozenset({_J.PENDING, _J.SUPERSEDED}),
    _J.ABORTED: frozenset(),
    _J.SUPERSEDED: frozenset(),
}

# Statuses a delivery may claim: those from which a step can start running.
JOURNAL_CLAIMABLE = frozenset(s for s, to in JOURNAL_TRANSITIONS.items() if _J.RUNNING in to)
# Statuses of a step that will never run again.
JOURNAL_ENDED = frozenset({_J.DONE, _J.FAILED, _J.ABORTED, _J.SUPERSEDED})
# Statuses of a step that may still run: the workflows the reconciler watches.
JOURNAL_OPEN = frozenset(s for s in JournalStatus if s not in JOURNAL_ENDED)


def check_vm(old: VmState, new: VmState) -> VmState:
    if new != old and new not in VM_TRANSITIONS[old]:
        raise InvalidStateTransition(kind="vm_state", old=old.value, new=new.value)
    return new


def check_task(old: TaskState | None, new: TaskState | None) -> TaskState | None:
    if new != old and new not in TASK_TRANSITIONS[old]:
        raise InvalidStateTransition(
            kind="task_state", old=old and old.value, new=new and new.value
        )
    return new


def check_migration(old: MigrationStatus, new: MigrationStatus) -> MigrationStatus:
    if new != old and new not in MIGRATION_TRANSITIONS[old]:
        raise InvalidStateTransition(kind="migration status", old=old.value, new=new.value)
    return new


def check_journal(old: str, new: JournalStatus) -> JournalStatus:
    """``old`` may be a plain string, as a row read back from the database holds it."""
    if new != old and new not in JOURNAL_TRANSITIONS[JournalStatus(old)]:
        raise InvalidStateTransition(kind="journal status", old=str(old), new=new.value)
    return new


# Nova's API status, derived from (vm_state, task_state).
_STATUS_BY_VM = {
    VmState.ACTIVE: "ACTIVE",
    VmState.BUILDING: "BUILD",
    VmState.STOPPED: "SHUTOFF",
    VmState.RESIZED: "VERIFY_RESIZE",
    VmState.ERROR: "ERROR",
    VmState.DELETED: "DELETED",
}
_RESIZING = {
    _T.RESIZE_PREP: "RESIZE",
    _T.RESIZE_MIGRATING: "RESIZE",
    _T.RESIZE_MIGRATED: "RESIZE",
    _T.RESIZE_FINISH: "RESIZE",
}
# The task states that show instead of the vm_state's status, by vm_state (Nova's
# _STATE_MAP): a reboot shows only on an active server.
_STATUS_BY_TASK: dict[VmState, dict[TaskState, str]] = {
    VmState.ACTIVE: {
        **_RESIZING,
        **dict.fromkeys((_T.REBOOTING, _T.REBOOT_PENDING, _T.REBOOT_STARTED), "REBOOT"),
        **dict.fromkeys(
            (_T.REBOOTING_HARD, _T.REBOOT_PENDING_HARD, _T.REBOOT_STARTED_HARD), "HARD_REBOOT"
        ),
    },
    VmState.STOPPED: _RESIZING,
    VmState.RESIZED: {_T.RESIZE_REVERTING: "REVERT_RESIZE"},
}


def api_status(vm: VmState, task: TaskState | None) -> str:
    """The ``status`` a Nova API client sees for a server."""
    by_task = _STATUS_BY_TASK.get(vm, {})
    return by_task[task] if task is not None and task in by_task else _STATUS_BY_VM[vm]
