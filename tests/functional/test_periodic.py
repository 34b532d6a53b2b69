"""Auto-confirm and incomplete-migration cleanup, as ``resizeflow beat`` runs them."""

from __future__ import annotations

import datetime as dt
import os
import signal

from resizeflow.db.models import Instance, utcnow
from resizeflow.periodic import cleanup_incomplete_migrations, confirm_unconfirmed_resizes
from resizeflow.restart import EXIT_RESTART
from resizeflow.states import MigrationStatus, TaskState, VmState
from tests.functional.test_flows import allocations, resize_to_verify
from tests.functional.test_reliability import assert_errored_out
from tests.support.stack import Stack, wait_for

LATER = dt.timedelta(hours=1)


def set_task_state(rf: Stack, uuid: str, task: TaskState | None) -> None:
    with rf.db.transaction() as s:
        inst = s.get(Instance, uuid)
        assert inst is not None
        inst.task_state = task


def test_auto_confirm_follows_novas_rules(rf: Stack, project: str) -> None:
    ready, finishing, deleting = (rf.boot(project) for _ in range(3))
    migs = {u: resize_to_verify(rf, project, u) for u in (ready, finishing, deleting)}
    # Nothing is old enough yet, and a window of 0 turns the task off.
    assert confirm_unconfirmed_resizes(rf.api, 3600).confirmed == []
    assert confirm_unconfirmed_resizes(rf.api, 0, now=utcnow() + LATER).confirmed == []

    set_task_state(rf, finishing, TaskState.RESIZE_FINISH)
    set_task_state(rf, deleting, TaskState.DELETING)
    result = confirm_unconfirmed_resizes(rf.api, 60, now=utcnow() + LATER)
    assert migs[ready] in result.confirmed
    assert {migs[finishing], migs[deleting]} <= set(result.skipped)
    rf.wait_migration(migs[ready], MigrationStatus.CONFIRMED)
    rf.wait_instance(ready, VmState.ACTIVE)
    assert rf.migration(migs[finishing]).status == MigrationStatus.FINISHED
    assert rf.migration(migs[deleting]).status == MigrationStatus.FINISHED

    # Left in a state that is not RESIZED/None: Nova errors the migration out.
    set_task_state(rf, finishing, TaskState.RESIZE_MIGRATED)
    result = confirm_unconfirmed_resizes(rf.api, 60, now=utcnow() + LATER)
    assert migs[finishing] in result.errored
    assert rf.migration(migs[finishing]).status == MigrationStatus.ERROR

    for uuid in (finishing, deleting):  # hand both back, as an operator's reset-state would
        set_task_state(rf, uuid, None)
    rf.api.confirm_resize(rf.ctx(project), deleting)
    rf.wait_migration(migs[deleting], MigrationStatus.CONFIRMED)
    with rf.db.transaction() as s:
        inst = s.get(Instance, finishing)
        assert inst is not None
        inst.vm_state = VmState.ERROR


def test_cleanup_purges_a_deleted_servers_leftovers(rf: Stack, project: str) -> None:
    uuid = rf.boot(project)
    mig_id = resize_to_verify(rf, project, uuid)
    mig = rf.migration(mig_id)
    rf.set_failpoints(
        {"resizeflow.revert.destroy_dest_domain": [{"mode": "fatal", "instance_uuid": uuid}]}
    )
    rf.api.revert_resize(rf.ctx(project), uuid)
    assert_errored_out(rf, uuid, mig_id, "destroy_dest_domain", "injected fatal failure")
    rf.api.delete(rf.ctx(project), uuid)
    wait_for(lambda: rf.instance(uuid).deleted, what="the delete")
    # The errored migration still holds the source claim and the source copy.
    assert allocations(rf, mig.uuid) == {
        mig.source_compute: {"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 1}
    }
    assert rf.instance_dir(mig.source_compute, uuid, "_resize").is_dir()
    assert uuid in rf.domains(mig.source_compute)

    assert cleanup_incomplete_migrations(rf.settings, rf.db, rf.app) == [mig_id]
    wait_for(lambda: rf.migration(mig_id).status == MigrationStatus.FAILED, what="the cleanup")
    assert allocations(rf, mig.uuid) == {}
    for host in (mig.source_compute, mig.dest_compute):
        assert not rf.instance_dir(host, uuid).exists()
        assert not rf.instance_dir(host, uuid, "_resize").exists()
        assert uuid not in rf.domains(host)
    assert mig_id not in cleanup_incomplete_migrations(rf.settings, rf.db, rf.app)


def test_beat_process_auto_confirms(rf: Stack, project: str) -> None:
    uuid = rf.boot(project)
    mig_id = resize_to_verify(rf, project, uuid)
    beat = rf.start_beat(RESIZEFLOW_RESIZE_CONFIRM_WINDOW="1", RESIZEFLOW_PERIODIC_INTERVAL="0.5")
    try:
        rf.wait_migration(mig_id, MigrationStatus.CONFIRMED, timeout=30)
        rf.wait_instance(uuid, VmState.ACTIVE)
    finally:
        beat.send_signal(signal.SIGTERM)
        beat.wait(timeout=30)
    assert beat.returncode == 0
    assert "confirm_unconfirmed_resizes" in (rf.state_dir / "beat.log").read_text()


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as fh:
        return [int(p) for p in fh.read().split()]


def test_beat_exits_for_a_restart_when_its_scheduler_dies(rf: Stack) -> None:
    # Celery runs the embedded scheduler as a child process; the process
    # around it would run on without it, and nothing would re-drive anything.
    beat = rf.start_beat()
    try:
        (scheduler,) = wait_for(lambda: _children(beat.pid), what="the embedded scheduler")
        os.kill(scheduler, signal.SIGKILL)
        # Non-zero, so that systemd's Restart=on-failure starts a fresh one.
        assert beat.wait(timeout=90) == EXIT_RESTART
    finally:
        if beat.poll() is None:
            beat.kill()
            beat.wait()
