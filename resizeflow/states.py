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


V, T, M = VmState, TaskState, MigrationStatus

VM_TRANSITIONS: dict[VmState, frozenset[VmState]] = {
    V.BUILDING: frozenset({V.ACTIVE, V.STOPPED, V.ERROR, V.DELETED}),
    V.ACTIVE: frozenset({V.STOPPED, V.RESIZED, V.ERROR, V.DELETED}),
    V.STOPPED: frozenset({V.ACTIVE, V.RESIZED, V.ERROR, V.DELETED}),
    # A resized server ends as ACTIVE or STOPPED after confirm or revert.
    V.RESIZED: frozenset({V.ACTIVE, V.STOPPED, V.ERROR, V.DELETED}),
    # Out of ERROR: Nova's reset-state, a delete, or an operator's workflow
    # retry or abort putting back the state a failed step started from.
    V.ERROR: frozenset({V.ACTIVE, V.STOPPED, V.RESIZED, V.DELETED}),
    V.DELETED: frozenset(),
}

# None is "no task in progress". Any task may be cleared back to None: on
# success, and when a workflow errors out and resets the task_state.
TASK_TRANSITIONS: dict[TaskState | None, frozenset[TaskState | None]] = {
    None: frozenset(
        {
            T.SCHEDULING,
            T.RESIZE_PREP,
            T.RESIZE_REVERTING,
            T.POWERING_OFF,
            T.POWERING_ON,
            T.DELETING,
        }
    ),
    # A delete is accepted in any task_state, as Nova accepts it; the service
    # layer ends the workflow in flight (see ComputeAPI.delete).
    T.SCHEDULING: frozenset({None, T.SPAWNING, T.DELETING}),
    T.SPAWNING: frozenset({None, T.DELETING}),
    T.RESIZE_PREP: frozenset({None, T.RESIZE_MIGRATING, T.DELETING}),
    T.RESIZE_MIGRATING: frozenset({None, T.RESIZE_MIGRATED, T.DELETING}),
    T.RESIZE_MIGRATED: frozenset({None, T.RESIZE_FINISH, T.DELETING}),
    T.RESIZE_FINISH: frozenset({None, T.DELETING}),
    T.RESIZE_REVERTING: frozenset({None, T.DELETING}),
    T.POWERING_OFF: frozenset({None, T.DELETING}),
    T.POWERING_ON: frozenset({None, T.DELETING}),
    T.DELETING: frozenset({None}),
}

MIGRATION_TRANSITIONS: dict[MigrationStatus, frozenset[MigrationStatus]] = {
    M.PRE_MIGRATING: frozenset({M.MIGRATING, M.ERROR}),
    M.MIGRATING: frozenset({M.POST_MIGRATING, M.ERROR}),
    M.POST_MIGRATING: frozenset({M.FINISHED, M.ERROR}),
    M.FINISHED: frozenset({M.CONFIRMING, M.REVERTING, M.ERROR}),
    M.CONFIRMING: frozenset({M.CONFIRMED, M.ERROR}),
    M.REVERTING: frozenset({M.REVERTED, M.ERROR}),
    M.CONFIRMED: frozenset(),
    # finish_revert runs after the migration is already `reverted`; when it
    # fails for good the migration is marked `error` so that it shows up.
    M.REVERTED: frozenset({M.ERROR}),
    # An operator's `workflow retry` puts a migration back where its workflow
    # failed, and `workflow abort` may hand a resize back to the user
    # (finished); cleanup of a deleted server's leftovers ends it as failed.
    M.ERROR: frozenset(
        {
            M.FAILED,
            M.PRE_MIGRATING,
            M.MIGRATING,
            M.POST_MIGRATING,
            M.FINISHED,
            M.CONFIRMING,
            M.CONFIRMED,
            M.REVERTING,
            M.REVERTED,
        }
    ),
    M.FAILED: frozenset(),
}

MIGRATION_TERMINAL = frozenset({M.CONFIRMED, M.REVERTED, M.ERROR, M.FAILED})

# Migrations that still hold a claim on their source node.
MIGRATION_IN_PROGRESS = frozenset(
    {M.PRE_MIGRATING, M.MIGRATING, M.POST_MIGRATING, M.FINISHED, M.CONFIRMING, M.REVERTING}
)


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


# Nova's API status, derived from (vm_state, task_state).
_STATUS_BY_VM = {
    V.ACTIVE: "ACTIVE",
    V.BUILDING: "BUILD",
    V.STOPPED: "SHUTOFF",
    V.RESIZED: "VERIFY_RESIZE",
    V.ERROR: "ERROR",
    V.DELETED: "DELETED",
}
_STATUS_BY_TASK = {
    T.RESIZE_PREP: "RESIZE",
    T.RESIZE_MIGRATING: "RESIZE",
    T.RESIZE_MIGRATED: "RESIZE",
    T.RESIZE_FINISH: "RESIZE",
    T.RESIZE_REVERTING: "REVERT_RESIZE",
}


def api_status(vm: VmState, task: TaskState | None) -> str:
    """The ``status`` a Nova API client sees for a server."""
    if vm in (V.ACTIVE, V.STOPPED, V.RESIZED) and task in _STATUS_BY_TASK:
        return _STATUS_BY_TASK[task]
    return _STATUS_BY_VM[vm]
