"""Hypervisor work outside the row locks: requests are answered during it, and a copy
whose lease another copy took over commits nothing."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import update

from resizeflow import recovery
from resizeflow.db import journal
from resizeflow.db.models import StepJournal, utcnow
from resizeflow.states import JournalStatus, MigrationStatus, VmState
from tests.support.stack import Stack, wait_for

COPY = "resizeflow.resize.resize_instance"
LATER = dt.timedelta(hours=1)


def hold_the_copy(rf: Stack, uuid: str, seconds: float) -> None:
    """A long disk copy: the hypervisor phase of resize_instance sleeps first."""
    rf.set_failpoints(
        {f"{COPY}:hypervisor": [{"mode": "delay", "seconds": seconds, "instance_uuid": uuid}]}
    )


def copy_row(rf: Stack, mig_id: int) -> StepJournal:
    with rf.db.snapshot() as s:
        row = journal.live(s, mig_id, COPY)
        assert row is not None
        return row


def wait_copying(rf: Stack, mig_id: int) -> None:
    wait_for(
        lambda: (
            copy_row(rf, mig_id).status == JournalStatus.RUNNING
            and rf.migration(mig_id).status == MigrationStatus.MIGRATING
        ),
        what="the disk copy to start",
    )


def test_a_request_that_locks_the_server_is_answered_during_a_long_copy(
    rf: Stack, project: str
) -> None:
    uuid = rf.boot(project)
    hold_the_copy(rf, uuid, 6)
    mig_id = rf.api.resize(rf.ctx(project), uuid, "2")
    wait_copying(rf, mig_id)
    # Locking the server writes its row: it would wait for the step's
    # transaction if the copy ran inside it.
    rf.api.lock(rf.ctx(project), uuid)
    assert rf.instance(uuid).locked
    assert copy_row(rf, mig_id).status == JournalStatus.RUNNING, "the copy is still going on"
    rf.api.unlock(rf.ctx(project), uuid)
    rf.wait_migration(mig_id, MigrationStatus.FINISHED)
    rf.wait_instance(uuid, VmState.RESIZED)
    row = copy_row(rf, mig_id)
    assert (row.status, row.applied) == (JournalStatus.DONE, 1)


def test_a_copy_whose_lease_was_taken_over_commits_nothing(rf: Stack, project: str) -> None:
    uuid = rf.boot(project)
    hold_the_copy(rf, uuid, 4)
    mig_id = rf.api.resize(rf.ctx(project), uuid, "2")
    wait_copying(rf, mig_id)
    first = copy_row(rf, mig_id).worker
    # What a claim by another worker does once the lease has lapsed: the row
    # is running under that worker now.
    with rf.db.transaction() as s:
        s.execute(
            update(StepJournal)
            .where(StepJournal.id == copy_row(rf, mig_id).id)
            .values(
                worker="intruder@elsewhere/1",
                holder="intruder",
                lease_expires_at=utcnow() + LATER,
            )
        )
    # The first copy finishes its hypervisor work, then finds the row not its own.
    source = rf.instance(uuid).host
    assert source is not None
    wait_for(
        lambda: f"{COPY} was taken over by intruder@elsewhere/1" in rf.worker_log(source),
        timeout=30,
        what="the first copy to give the step up",
    )
    row = copy_row(rf, mig_id)
    assert (row.status, row.worker, row.applied) == (
        JournalStatus.RUNNING,
        "intruder@elsewhere/1",
        0,
    ), f"first copy ran as {first}"
    assert rf.migration(mig_id).status == MigrationStatus.MIGRATING
    # The intruder dies too: once its lease lapses the reconciler re-drives.
    rf.set_failpoints({})
    with rf.db.transaction() as s:
        s.execute(
            update(StepJournal).where(StepJournal.id == row.id).values(lease_expires_at=utcnow())
        )
    redriven = recovery.reconcile(rf.settings, rf.db, rf.app, now=utcnow() + LATER)
    assert [(r.subject, r.step) for r in redriven] == [(mig_id, COPY)]
    rf.wait_migration(mig_id, MigrationStatus.FINISHED)
    rf.wait_instance(uuid, VmState.RESIZED)
    row = copy_row(rf, mig_id)
    assert (row.status, row.applied) == (JournalStatus.DONE, 1)
