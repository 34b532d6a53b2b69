"""Operator verbs: retry a failed workflow at its failed step, or abort it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import select

from resizeflow import errors
from resizeflow.compute.workflow_admin import WorkflowAdmin
from resizeflow.db.models import InstanceAction, StepJournal
from resizeflow.states import JournalStatus, MigrationStatus, VmState
from tests.functional.test_flows import allocations, resize_to_verify, step_events
from tests.functional.test_reliability import assert_errored_out
from tests.support.stack import Stack, wait_for


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


@contextmanager
def immutable(path: Path) -> Iterator[None]:
    """``chattr +i``: the file cannot be removed, so a removal of its directory
    fails partway, as a busy or broken filesystem makes it fail."""
    subprocess.run(["chattr", "+i", str(path)], check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_abort_after_the_dest_domain_was_destroyed_leaves_error_naming_the_good_copy(
    rf: Stack, project: str
) -> None:
    """destroy_dest_domain undefines the dest domain, then fails removing its disk:
    the resize is no longer whole on the dest, so an abort must not hand it back
    (a confirm would then delete the source's _resize, the last good copy)."""
    uuid = rf.boot(project)
    mig_id = resize_to_verify(rf, project, uuid)
    mig = rf.migration(mig_id)
    with immutable(rf.instance_dir(mig.dest_compute, uuid) / "disk"):
        rf.api.revert_resize(rf.ctx(project), uuid)
        assert_errored_out(rf, uuid, mig_id, "destroy_dest_domain", "Operation not permitted")
        assert uuid not in rf.domains(mig.dest_compute)  # the undefine happened
        outcome = admin_verbs(rf).abort(rf.admin(), mig_id)
    assert outcome.result == "left in error", outcome
    inst = rf.instance(uuid)
    assert (inst.vm_state, inst.task_state) == (VmState.ERROR, None)
    fault = rf.faults(uuid)[-1]
    assert f"aborted by an operator at destroy_dest_domain on {mig.dest_compute}" in fault
    assert f"intact disks are on {mig.source_compute}" in fault and f"{uuid}_resize" in fault
    # The good copy is where the fault says, and nothing lets a confirm remove it.
    assert (rf.instance_dir(mig.source_compute, uuid, "_resize") / "disk").exists()
    with pytest.raises(errors.InstanceInvalidState):
        rf.api.confirm_resize(rf.ctx(project), uuid)
    assert rf.migration(mig_id).status == MigrationStatus.ERROR
    # The revert's action ends in error, its event with it.
    revert = step_events(rf, "revertResize", uuid)
    assert revert == [("compute_revert_resize", "Error")], revert


def test_abort_of_a_hypervisor_step_never_claimed_hands_the_resize_back(
    rf: Stack, project: str
) -> None:
    """The revert's network teardown ran; the dest's worker stopped before it took
    destroy_dest_domain: the journal proves the dest domain untouched."""
    uuid = rf.boot(project)
    mig_id = resize_to_verify(rf, project, uuid)
    mig = rf.migration(mig_id)
    dest = mig.dest_compute
    rf.set_failpoints(
        {
            "resizeflow.revert.teardown_dest_network": [
                {"mode": "delay", "seconds": 2, "times": 1, "instance_uuid": uuid}
            ]
        }
    )
    rf.api.revert_resize(rf.ctx(project), uuid)
    wait_for(lambda: row(rf, mig_id, "teardown_dest_network").status == "running", 30)
    rf.stop_worker(dest)  # a warm shutdown: the running step ends, nothing new starts
    try:
        assert row(rf, mig_id, "teardown_dest_network").status == JournalStatus.DONE
        destroy = row(rf, mig_id, "destroy_dest_domain")
        assert (destroy.status, destroy.attempts) == (JournalStatus.PENDING, 0)

        outcome = admin_verbs(rf).abort(rf.admin(), mig_id)
        assert outcome.result == "compensated", outcome
        inst = rf.wait_instance(uuid, VmState.RESIZED)
        assert inst.host == dest
    finally:
        rf.start_worker(dest)
    # The message the dest never took arrives now and finds its flow handed back.
    assert uuid in rf.domains(dest)
    rf.api.confirm_resize(rf.ctx(project), uuid)
    rf.wait_migration(mig_id, MigrationStatus.CONFIRMED)
    rf.wait_instance(uuid, VmState.ACTIVE)
    assert allocations(rf, mig.uuid) == {}
    assert [r.status for r in rf.journal(mig_id) if r.flow == "revert"] == []  # superseded


def test_abort_of_a_step_whose_host_shows_its_domain_whole_hands_the_resize_back(
    rf: Stack, project: str
) -> None:
    """destroy_dest_domain was claimed and failed before it touched anything: the
    journal cannot prove that, the dest's hypervisor can (the domain is defined,
    its disk there). With the dest down, nothing proves it."""
    first, second = rf.boot(project), rf.boot(project)
    m1, m2 = resize_to_verify(rf, project, first), resize_to_verify(rf, project, second)
    for uuid, mig_id in ((first, m1), (second, m2)):
        fail_once(rf, "resizeflow.revert.destroy_dest_domain", uuid)
        rf.api.revert_resize(rf.ctx(project), uuid)
        assert_errored_out(rf, uuid, mig_id, "destroy_dest_domain", "injected fatal failure")
        assert row(rf, mig_id, "destroy_dest_domain").attempts == 1
    dest = rf.migration(m1).dest_compute
    assert uuid in rf.domains(dest)

    outcome = admin_verbs(rf).abort(rf.admin(), m1)
    assert outcome.result == "compensated", outcome
    assert f"({dest} still has its domain, whole)" in outcome.message
    rf.wait_instance(first, VmState.RESIZED)
    rf.api.confirm_resize(rf.ctx(project), first)
    rf.wait_migration(m1, MigrationStatus.CONFIRMED)
    rf.wait_instance(first, VmState.ACTIVE)

    assert rf.migration(m2).dest_compute == dest
    rf.stop_worker(dest)
    try:
        outcome = admin_verbs(rf).abort(rf.admin(), m2)
    finally:
        rf.start_worker(dest)
    assert outcome.result == "left in error", outcome
    assert rf.instance(second).vm_state == VmState.ERROR


def row(rf: Stack, mig_id: int, step: str) -> StepJournal:
    (found,) = [r for r in rf.journal(mig_id) if r.step.endswith("." + step)]
    return found


def test_a_confirm_that_failed_frees_the_source_and_cannot_be_handed_back(
    rf: Stack, project: str
) -> None:
    """Nova's confirm frees the source allocation and the stashed flavors in a
    finally: a confirm that failed at its first step has nothing to go back to."""
    uuid = rf.boot(project)
    mig_id = resize_to_verify(rf, project, uuid)
    mig = rf.migration(mig_id)
    assert allocations(rf, mig.uuid)  # the old flavor's claim on the source
    fail_once(rf, "resizeflow.confirm.teardown_source_network", uuid)
    rf.api.confirm_resize(rf.ctx(project), uuid)
    assert_errored_out(rf, uuid, mig_id, "teardown_source_network", "injected fatal failure")
    assert allocations(rf, mig.uuid) == {}
    inst = rf.instance(uuid)
    assert (inst.old_flavor, inst.new_flavor) == (None, None)
    assert "old_vm_state" not in inst.system_metadata
    assert inst.host == mig.dest_compute and inst.flavor["name"] == "m1.small"

    outcome = admin_verbs(rf).abort(rf.admin(), mig_id)
    assert outcome.result == "left in error", outcome
    assert f"intact disks are on {mig.dest_compute}" in rf.faults(uuid)[-1]
    assert rf.instance(uuid).vm_state == VmState.ERROR


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
    # The first fails at the dest domain's destroy, the second before it, at the
    # network teardown, which an abort can undo.
    for uuid, mig, step in (
        (first, m1, "destroy_dest_domain"),
        (second, m2, "teardown_dest_network"),
    ):
        fail_once(rf, f"resizeflow.revert.{step}", uuid)
        rf.api.revert_resize(rf.ctx(project), uuid)
        assert_errored_out(rf, uuid, mig, step, "injected fatal failure")
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
