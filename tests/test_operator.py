"""Operator verbs: retry a failed workflow at its failed step, or abort it."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from resizeflow import errors
from resizeflow.compute.workflow_admin import WorkflowAdmin
from resizeflow.db.models import InstanceAction, StepJournal
from resizeflow.states import JournalStatus, MigrationStatus, VmState
from tests.stack import Stack
from tests.test_flows import allocations, resize_to_verify
from tests.test_reliability import assert_errored_out


def admin_verbs(rf: Stack) -> WorkflowAdmin:
    return WorkflowAdmin(rf.settings, rf.db, rf.app)


def fail_once(rf: Stack, step: str, uuid: str) -> None:
    rf.set_failpoints({step: [{"mode": "fatal", "times": 1, "instance_uuid": uuid}]})


def actions(rf: Stack, uuid: str) -> list[str]:
    with rf.db.snapshot() as s:
        return list(
            s.scalars(
                select(InstanceAction.action)
                .where(InstanceAction.instance_uuid == uuid)
                .order_by(InstanceAction.id)
            )
        )


def test_retry_resumes_at_the_failed_step(rf: Stack, project: str) -> None:
    uuid = rf.boot(project)
    mig_id = resize_to_verify(rf, project, uuid)
    source = rf.migration(mig_id).source_compute
    fail_once(rf, "resizeflow.revert.destroy_dest_domain", uuid)
    rf.api.revert_resize(rf.ctx(project), uuid)
    assert_errored_out(rf, uuid, mig_id, "destroy_dest_domain", "injected fatal failure")

    with pytest.raises(errors.PolicyNotAuthorized):
        admin_verbs(rf).retry(rf.ctx(project), mig_id)
    outcome = admin_verbs(rf).retry(rf.admin(), mig_id)
    assert (outcome.result, outcome.step) == ("retried", "resizeflow.revert.destroy_dest_domain")
    rf.wait_migration(mig_id, MigrationStatus.REVERTED)
    inst = rf.wait_instance(uuid, VmState.ACTIVE)
    assert (inst.host, inst.flavor["name"]) == (source, "m1.tiny")
    rows = {r.step.rsplit(".", 1)[1]: r for r in rf.journal(mig_id) if r.flow == "revert"}
    assert rows["destroy_dest_domain"].attempts == 2
    assert rows["teardown_dest_network"].attempts == 1  # done steps are not run again
    assert all(r.status == JournalStatus.DONE for r in rows.values())
    assert actions(rf, uuid)[-2:] == ["revertResize", "workflowRetry"]
    with pytest.raises(errors.WorkflowNotFailed):
        admin_verbs(rf).retry(rf.admin(), mig_id)


def test_abort_before_the_hypervisor_changed_hands_the_resize_back(rf: Stack, project: str) -> None:
    uuid = rf.boot(project)
    mig_id = resize_to_verify(rf, project, uuid)
    mig = rf.migration(mig_id)
    fail_once(rf, "resizeflow.revert.destroy_dest_domain", uuid)
    rf.api.revert_resize(rf.ctx(project), uuid)
    assert_errored_out(rf, uuid, mig_id, "destroy_dest_domain", "injected fatal failure")

    outcome = admin_verbs(rf).abort(rf.admin(), mig_id)
    assert outcome.result == "compensated"
    inst = rf.wait_instance(uuid, VmState.RESIZED)
    assert inst.host == mig.dest_compute
    assert rf.migration(mig_id).status == MigrationStatus.FINISHED
    assert actions(rf, uuid)[-1] == "workflowAbort"
    # The revert's rows stay, as history: the journal never forgets work done.
    with rf.db.snapshot() as s:
        reverted = s.scalars(
            select(StepJournal).where(
                StepJournal.migration_id == mig_id, StepJournal.flow == "revert"
            )
        ).all()
    assert [r.status for r in sorted(reverted, key=lambda r: r.position)] == [
        JournalStatus.SUPERSEDED
    ] * 5
    assert [r.applied for r in sorted(reverted, key=lambda r: r.position)] == [1, 0, 0, 0, 0]
    # The user decides again: this time, confirm.
    rf.api.confirm_resize(rf.ctx(project), uuid)
    rf.wait_migration(mig_id, MigrationStatus.CONFIRMED)
    rf.wait_instance(uuid, VmState.ACTIVE)
    assert allocations(rf, mig.uuid) == {}


def test_abort_past_the_point_of_no_return_leaves_error_and_a_fault(
    rf: Stack, project: str
) -> None:
    uuid = rf.boot(project)
    mig_id = resize_to_verify(rf, project, uuid)
    fail_once(rf, "resizeflow.confirm.drop_source_claim", uuid)
    rf.api.confirm_resize(rf.ctx(project), uuid)
    assert_errored_out(rf, uuid, mig_id, "drop_source_claim", "injected fatal failure")

    outcome = admin_verbs(rf).abort(rf.admin(), mig_id)
    assert outcome.result == "left in error"
    inst = rf.instance(uuid)
    assert (inst.vm_state, inst.task_state) == (VmState.ERROR, None)
    assert any("aborted by an operator at drop_source_claim" in f for f in rf.faults(uuid))
    statuses = [r.status for r in rf.journal(mig_id) if r.flow == "confirm"]
    assert statuses == ["done", "done", "failed", "aborted"]
    # Aborted is final: neither verb applies any more.
    for verb in (admin_verbs(rf).retry, admin_verbs(rf).abort):
        with pytest.raises(errors.WorkflowNotFailed):
            verb(rf.admin(), mig_id)
    assert len(rf.faults(uuid)) == 2  # the step's, and the abort's


def test_verbs_through_the_cli_and_the_admin_api(rf: Stack, project: str) -> None:
    import subprocess
    import sys

    import httpx

    first, second = rf.boot(project), rf.boot(project)
    m1, m2 = resize_to_verify(rf, project, first), resize_to_verify(rf, project, second)
    for uuid in (first, second):
        fail_once(rf, "resizeflow.revert.destroy_dest_domain", uuid)
        rf.api.revert_resize(rf.ctx(project), uuid)
        mig = m1 if uuid == first else m2
        assert_errored_out(rf, uuid, mig, "destroy_dest_domain", "injected fatal failure")
        rf.set_failpoints({})

    done = subprocess.run(
        [sys.executable, "-m", "resizeflow", "workflow", "retry", str(m1)],
        env=rf.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert f"migration {m1}: retried" in done.stdout
    rf.wait_migration(m1, MigrationStatus.REVERTED)
    rf.wait_instance(first, VmState.ACTIVE)

    url = rf.api_endpoint() + f"/os-resizeflow/workflows/{m2}/action"
    denied = httpx.post(url, json={"abort": None}, headers={"X-Auth-Token": f"bob:{project}"})
    assert denied.status_code == 403
    resp = httpx.post(url, json={"abort": None}, headers={"X-Auth-Token": "admin:admin"})
    assert resp.status_code == 202, resp.text
    assert resp.json()["workflow"]["result"] == "compensated"
    rf.wait_instance(second, VmState.RESIZED)
    again = httpx.post(url, json={"retry": None}, headers={"X-Auth-Token": "admin:admin"})
    assert again.status_code == 409
    assert "only a failed workflow can be" in again.json()["conflictingRequest"]["message"]
    rf.api.confirm_resize(rf.ctx(project), second)
    rf.wait_migration(m2, MigrationStatus.CONFIRMED)
