"""Walk every pair of states against the transition tables in resizeflow.states."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest

from resizeflow.errors import InvalidStateTransition
from resizeflow.states import (
    JOURNAL_CLAIMABLE,
    JOURNAL_TRANSITIONS,
    MIGRATION_TRANSITIONS,
    TASK_TRANSITIONS,
    VM_TRANSITIONS,
    JournalStatus,
    MigrationStatus,
    TaskState,
    VmState,
    api_status,
    check_journal,
    check_migration,
    check_task,
    check_vm,
)

pytestmark = pytest.mark.fast

TASKS: list[TaskState | None] = [None, *TaskState]
TABLES: list[tuple[str, dict[Any, frozenset[Any]], list[Any], Callable[[Any, Any], Any]]] = [
    ("vm", VM_TRANSITIONS, list(VmState), check_vm),
    ("task", TASK_TRANSITIONS, TASKS, check_task),
    ("migration", MIGRATION_TRANSITIONS, list(MigrationStatus), check_migration),
    ("journal", JOURNAL_TRANSITIONS, list(JournalStatus), check_journal),
]
PAIRS = [
    pytest.param(table, members, check, old, new, id=f"{kind}:{old}->{new}")
    for kind, table, members, check in TABLES
    for old, new in itertools.product(members, repeat=2)
]


@pytest.mark.parametrize(("table", "members", "check", "old", "new"), PAIRS)
def test_every_pair_follows_its_table(
    table: dict[Any, frozenset[Any]],
    members: list[Any],
    check: Callable[[Any, Any], Any],
    old: Any,
    new: Any,
) -> None:
    if old == new or new in table[old]:
        assert check(old, new) == new
    else:
        with pytest.raises(InvalidStateTransition) as info:
            check(old, new)
        assert info.value.code == 409
        assert str(getattr(new, "value", new)) in info.value.message


@pytest.mark.parametrize(("kind", "table", "members"), [(k, t, m) for k, t, m, _ in TABLES])
def test_tables_cover_every_member(
    kind: str, table: dict[Any, frozenset[Any]], members: list[Any]
) -> None:
    assert set(table) == set(members), kind
    assert all(targets <= set(members) for targets in table.values()), kind


def test_walk_exercises_both_outcomes() -> None:
    # Guards the walk above against a table that allows everything or nothing.
    assert check_migration(MigrationStatus.FINISHED, MigrationStatus.CONFIRMING)
    with pytest.raises(InvalidStateTransition):
        check_migration(MigrationStatus.CONFIRMED, MigrationStatus.REVERTING)
    with pytest.raises(InvalidStateTransition):
        check_vm(VmState.DELETED, VmState.ACTIVE)
    with pytest.raises(InvalidStateTransition):
        check_task(None, TaskState.RESIZE_FINISH)
    with pytest.raises(InvalidStateTransition):
        check_journal("done", JournalStatus.RUNNING)
    # A row read back from the database may hold the plain string.
    assert check_journal("running", JournalStatus.DONE) is JournalStatus.DONE


def test_claimable_statuses_are_those_that_may_start_running() -> None:
    assert {
        JournalStatus.PENDING,
        JournalStatus.RUNNING,
        JournalStatus.RETRYING,
    } == JOURNAL_CLAIMABLE


@pytest.mark.parametrize("old", TASKS)
def test_same_state_is_a_no_op(old: TaskState | None) -> None:
    assert check_task(old, old) is old


RESIZING = [
    TaskState.RESIZE_PREP,
    TaskState.RESIZE_MIGRATING,
    TaskState.RESIZE_MIGRATED,
    TaskState.RESIZE_FINISH,
]
SOFT_REBOOT = [TaskState.REBOOTING, TaskState.REBOOT_PENDING, TaskState.REBOOT_STARTED]
HARD_REBOOT = [
    TaskState.REBOOTING_HARD,
    TaskState.REBOOT_PENDING_HARD,
    TaskState.REBOOT_STARTED_HARD,
]


@pytest.mark.parametrize(
    ("vm", "task", "status"),
    [
        (VmState.ACTIVE, None, "ACTIVE"),
        (VmState.STOPPED, None, "SHUTOFF"),
        (VmState.BUILDING, TaskState.SPAWNING, "BUILD"),
        (VmState.RESIZED, None, "VERIFY_RESIZE"),
        (VmState.RESIZED, TaskState.RESIZE_REVERTING, "REVERT_RESIZE"),
        (VmState.ERROR, None, "ERROR"),
        (VmState.ERROR, TaskState.RESIZE_PREP, "ERROR"),
        (VmState.DELETED, None, "DELETED"),
        *[(VmState.ACTIVE, t, "RESIZE") for t in RESIZING],
        *[(VmState.STOPPED, t, "RESIZE") for t in RESIZING],
        (VmState.ACTIVE, TaskState.POWERING_OFF, "ACTIVE"),
        (VmState.STOPPED, TaskState.POWERING_ON, "SHUTOFF"),
        # Nova's _STATE_MAP: a reboot shows only while the server is active.
        *[(VmState.ACTIVE, t, "REBOOT") for t in SOFT_REBOOT],
        *[(VmState.ACTIVE, t, "HARD_REBOOT") for t in HARD_REBOOT],
        *[(VmState.STOPPED, t, "SHUTOFF") for t in HARD_REBOOT],
        *[(VmState.ERROR, t, "ERROR") for t in HARD_REBOOT],
        (VmState.RESIZED, TaskState.RESIZE_PREP, "VERIFY_RESIZE"),
    ],
)
def test_api_status(vm: VmState, task: TaskState | None, status: str) -> None:
    assert api_status(vm, task) == status
