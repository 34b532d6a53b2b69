"""The reconciler and worker-start recovery re-drive what was lost, exactly once."""

from __future__ import annotations

import datetime as dt

from resizeflow import flows, recovery, routing
from resizeflow.db import api as dbapi
from resizeflow.db import journal
from resizeflow.db.models import Instance, StepJournal, utcnow
from resizeflow.states import JournalStatus, MigrationStatus, TaskState, VmState
from tests.functional.test_flows import allocations, resize_to_verify
from tests.support.stack import Stack, wait_for

LATER = dt.timedelta(hours=1)


def plan_without_sending(rf: Stack, uuid: str, mig_id: int, flow: str) -> None:
    """What the service layer commits before it sends a chain, as if the send was lost."""
    status = {"confirm": MigrationStatus.CONFIRMING, "revert": MigrationStatus.REVERTING}[flow]
    with rf.db.transaction() as s:
        mig = dbapi.get_migration(s, mig_id)
        if flow == "revert":
            dbapi.cas_task_state(s, uuid, [None], TaskState.RESIZE_REVERTING)
        dbapi.cas_migration_status(s, mig_id, MigrationStatus.FINISHED, status)
        ctx = rf.ctx("lost")
        dbapi.record_action(
            s,
            action=flow,
            instance_uuid=uuid,
            request_id=ctx.request_id,
            user_id="u",
            project_id="p",
        )
        journal.plan(
            s,
            flow,
            routing.plan(flows.FLOWS[flow], source=mig.source_compute, dest=mig.dest_compute),
            migration_id=mig_id,
            instance_uuid=uuid,
            request_id=ctx.request_id,
        )


def test_lost_chain_is_re_driven_after_the_deadline(rf: Stack, project: str) -> None:
    kept, undone = rf.boot(project), rf.boot(project)
    k_mig, u_mig = resize_to_verify(rf, project, kept), resize_to_verify(rf, project, undone)
    plan_without_sending(rf, kept, k_mig, "confirm")
    plan_without_sending(rf, undone, u_mig, "revert")
    # Within the deadline nothing is stalled yet.
    assert recovery.reconcile(rf.settings, rf.db, rf.app) == []
    redriven = recovery.reconcile(rf.settings, rf.db, rf.app, now=utcnow() + LATER)
    assert {(r.migration_id, r.flow, r.step) for r in redriven} == {
        (k_mig, "confirm", "resizeflow.confirm.teardown_source_network"),
        (u_mig, "revert", "resizeflow.revert.teardown_dest_network"),
    }
    rf.wait_migration(k_mig, MigrationStatus.CONFIRMED)
    rf.wait_migration(u_mig, MigrationStatus.REVERTED)
    rf.wait_instance(kept, VmState.ACTIVE)
    rf.wait_instance(undone, VmState.ACTIVE)
    # Sent once more, not on every pass: the deadline restarted when it was re-driven.
    assert recovery.reconcile(rf.settings, rf.db, rf.app) == []


def test_dropped_link_mid_chain_resumes_at_the_first_step_not_done(rf: Stack, project: str) -> None:
    uuid = rf.boot(project)
    mig_id = resize_to_verify(rf, project, uuid)
    mig = rf.migration(mig_id)
    plan_without_sending(rf, uuid, mig_id, "confirm")
    # The first two steps ran; the message for the third was dropped.
    first_two = routing.plan(
        flows.FLOWS["confirm"], source=mig.source_compute, dest=mig.dest_compute
    )[:2]
    routing.launch(rf.app, mig_id, first_two)
    wait_for(
        lambda: (
            [r.status for r in rf.journal(mig_id) if r.flow == "confirm"]
            == ["done", "done", "pending", "pending"]
        ),
        what="the first two confirm steps",
    )
    [item] = recovery.reconcile(rf.settings, rf.db, rf.app, now=utcnow() + LATER)
    assert item.step == "resizeflow.confirm.drop_source_claim"
    assert [s.step.rsplit(".", 1)[1] for s in item.steps] == ["drop_source_claim", "finish_confirm"]
    rf.wait_migration(mig_id, MigrationStatus.CONFIRMED)
    rows = [r for r in rf.journal(mig_id) if r.flow == "confirm"]
    assert [(r.status, r.attempts) for r in rows] == [("done", 1)] * 4


def test_worker_killed_mid_step_is_recovered_when_it_restarts(rf: Stack, project: str) -> None:
    uuid = rf.boot(project)
    mig_id = resize_to_verify(rf, project, uuid)
    mig = rf.migration(mig_id)
    rf.set_failpoints(
        {
            "resizeflow.confirm.confirm_migration": [
                {"mode": "delay", "seconds": 30, "times": 1, "instance_uuid": uuid}
            ]
        }
    )
    rf.api.confirm_resize(rf.ctx(project), uuid)
    wait_for(
        lambda: any(
            r.step.endswith("confirm_migration") and r.status == JournalStatus.RUNNING
            for r in rf.journal(mig_id)
        ),
        what="confirm_migration to start",
    )
    # The running step's lease is live: the reconciler leaves it alone.
    assert recovery.reconcile(rf.settings, rf.db, rf.app) == []
    rf.kill_worker(mig.source_compute)
    rf.start_worker(mig.source_compute)
    rf.wait_migration(mig_id, MigrationStatus.CONFIRMED)
    rf.wait_instance(uuid, VmState.ACTIVE)
    row = next(r for r in rf.journal(mig_id) if r.step.endswith("confirm_migration"))
    assert (row.status, row.attempts) == ("done", 2)
    assert allocations(rf, mig.uuid) == {}
    assert not rf.instance_dir(mig.source_compute, uuid, "_resize").exists()
    assert uuid not in rf.domains(mig.source_compute)


def test_lapsed_lease_and_lost_retry_are_re_driven(rf: Stack, project: str) -> None:
    running, retrying = rf.boot(project), rf.boot(project)
    r_mig, t_mig = resize_to_verify(rf, project, running), resize_to_verify(rf, project, retrying)
    plan_without_sending(rf, running, r_mig, "confirm")
    plan_without_sending(rf, retrying, t_mig, "confirm")
    long_ago = utcnow() - LATER
    with rf.db.transaction() as s:
        for mig_id, status in ((r_mig, JournalStatus.RUNNING), (t_mig, JournalStatus.RETRYING)):
            row = journal.live(s, mig_id, "resizeflow.confirm.teardown_source_network")
            assert row is not None
            row.status, row.attempts, row.worker = status, 1, "gone@nowhere"
            row.enqueued_at = row.started_at = row.heartbeat_at = long_ago
            row.lease_expires_at = long_ago if status == JournalStatus.RUNNING else None
    redriven = recovery.reconcile(rf.settings, rf.db, rf.app)
    assert {(r.migration_id, r.reason) for r in redriven} == {
        (r_mig, "the running step's lease lapsed"),
        (t_mig, "its retry never arrived"),
    }
    rf.wait_migration(r_mig, MigrationStatus.CONFIRMED)
    rf.wait_migration(t_mig, MigrationStatus.CONFIRMED)
    with rf.db.snapshot() as s:
        rows = s.query(StepJournal).filter(StepJournal.migration_id.in_([r_mig, t_mig])).all()
        assert all(r.status == JournalStatus.DONE for r in rows if r.flow == "confirm")


def test_lost_instance_operation_is_re_sent(rf: Stack, project: str) -> None:
    uuid = rf.boot(project)
    with rf.db.transaction() as s:  # a stop whose message never reached the host
        dbapi.cas_task_state(s, uuid, [None], TaskState.POWERING_OFF)
        host = dbapi.get_instance(s, uuid).host
        journal.plan(
            s,
            "stop",
            routing.plan(flows.STOP, host=host),
            instance_uuid=uuid,
            request_id="req-lost-stop",
        )
    assert recovery.reconcile(rf.settings, rf.db, rf.app) == []
    [item] = recovery.reconcile(rf.settings, rf.db, rf.app, now=utcnow() + LATER)
    assert (item.subject, item.flow, item.migration_id) == (uuid, "stop", None)
    inst = rf.wait_instance(uuid, VmState.STOPPED)
    assert inst.task_state is None
    with rf.db.snapshot() as s:
        assert s.get(Instance, uuid) is not None
