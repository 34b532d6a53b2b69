"""Races, duplicate deliveries, transient and permanent step failures."""

from __future__ import annotations

import shutil
import subprocess
import threading
from typing import Any

import pytest
from sqlalchemy import func, select

from resizeflow import errors, flows, routing
from resizeflow.compute.workflow_admin import WorkflowAdmin
from resizeflow.db.models import (
    Allocation,
    ComputeNode,
    InstanceActionEvent,
    InstanceFault,
)
from resizeflow.states import JournalStatus, MigrationStatus, VmState
from tests.functional.test_flows import allocations, resize_to_verify, step_events
from tests.functional.test_notifications import drain
from tests.support.stack import Stack, wait_for


def snapshot(rf: Stack, uuid: str, mig_id: int) -> dict[str, Any]:
    """Everything a step could change, for before/after comparisons."""
    inst, mig = rf.instance(uuid), rf.migration(mig_id)
    with rf.db.transaction() as s:
        nodes = [
            (n.host, n.vcpus_used, n.memory_mb_used, n.local_gb_used)
            for n in s.scalars(select(ComputeNode).order_by(ComputeNode.host))
        ]
        allocs = sorted(
            s.execute(
                select(
                    Allocation.consumer_uuid,
                    Allocation.node_id,
                    Allocation.resource_class,
                    Allocation.used,
                )
            ).all()
        )
        events = s.scalar(select(func.count()).select_from(InstanceActionEvent))
        faults = s.scalar(select(func.count()).select_from(InstanceFault))
    return {
        "instance": (inst.host, inst.vm_state, inst.task_state, inst.power_state, inst.flavor),
        "migration": mig.status,
        "nodes": nodes,
        "allocations": allocs,
        "events": events,
        "faults": faults,
        "journal": [(r.step, r.status, r.attempts) for r in rf.journal(mig_id)],
        "domains": {h: rf.domains(h).get(uuid) for h in rf.hosts},
    }


def test_confirm_racing_revert_exactly_one_wins(rf: Stack, project: str) -> None:
    rounds, servers = 2, 6
    uuids = [rf.boot(project) for _ in range(servers)]
    for _ in range(rounds):
        migs = {
            u: rf.api.resize(rf.ctx(project), u, "2" if rf.instance(u).flavor["id"] == 1 else "3")
            for u in uuids
        }
        for u, m in migs.items():
            rf.wait_migration(m, MigrationStatus.FINISHED)
            rf.wait_instance(u, VmState.RESIZED)
        outcomes: dict[str, dict[str, Any]] = {u: {} for u in uuids}
        barrier = threading.Barrier(2 * servers)

        def attempt(
            uuid: str, which: str, barrier: threading.Barrier, outcomes: dict[str, dict[str, Any]]
        ) -> None:
            call = rf.api.confirm_resize if which == "confirm" else rf.api.revert_resize
            barrier.wait()
            try:
                call(rf.ctx(project), uuid)
                outcomes[uuid][which] = "ok"
            except errors.ResizeflowError as exc:
                outcomes[uuid][which] = exc

        threads = [
            threading.Thread(target=attempt, args=(u, w, barrier, outcomes))
            for u in uuids
            for w in ("confirm", "revert")
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for uuid, result in outcomes.items():
            winners = [w for w, r in result.items() if r == "ok"]
            assert len(winners) == 1, result
            loser = next(r for r in result.values() if r != "ok")
            # Nova's answers to the loser: 400 "not resized" or 409 conflict.
            assert isinstance(loser, errors.InstanceNotResized | errors.Conflict), repr(loser)
            assert loser.code in (400, 409)
            expected = (
                MigrationStatus.CONFIRMED if winners[0] == "confirm" else MigrationStatus.REVERTED
            )
            rf.wait_migration(migs[uuid], expected)
            rf.wait_instance(uuid, VmState.ACTIVE)


def test_duplicate_deliveries_change_nothing(rf: Stack, project: str) -> None:
    uuid = rf.boot(project)
    mig_id = rf.api.resize(rf.ctx(project), uuid, "2")
    mig = rf.migration(mig_id)
    # A second copy of the whole chain, racing the first: every step is
    # delivered twice, often while its twin is running.
    resize_plan = routing.plan(
        flows.FLOWS["resize"], source=mig.source_compute, dest=mig.dest_compute
    )
    routing.launch(rf.app, mig_id, resize_plan)
    rf.wait_migration(mig_id, MigrationStatus.FINISHED)
    wait_for(
        lambda: all(r.deliveries == 2 for r in rf.journal(mig_id)),
        what="both copies of every resize step",
    )
    assert [(r.status, r.attempts) for r in rf.journal(mig_id)] == [("done", 1)] * 3
    # One claim on the dest, not two.
    from tests.functional.test_flows import allocations

    assert allocations(rf, uuid) == {
        mig.dest_compute: {"VCPU": 1, "MEMORY_MB": 2048, "DISK_GB": 20}
    }

    rf.api.confirm_resize(rf.ctx(project), uuid)
    rf.wait_migration(mig_id, MigrationStatus.CONFIRMED)
    rf.wait_instance(uuid, VmState.ACTIVE)
    before = snapshot(rf, uuid, mig_id)
    # Redeliver every step of both flows after the fact.
    for flow in ("resize", "confirm"):
        for planned in routing.plan(
            flows.FLOWS[flow], source=mig.source_compute, dest=mig.dest_compute
        ):
            routing.signature(rf.app, planned.step, mig_id, planned.host).apply_async()
    wait_for(
        lambda: (
            all(r.deliveries >= 2 for r in rf.journal(mig_id) if r.flow == "confirm")
            and all(r.deliveries == 3 for r in rf.journal(mig_id) if r.flow == "resize")
        ),
        what="the redeliveries",
    )
    assert snapshot(rf, uuid, mig_id) == before


def test_transient_failure_is_retried_then_succeeds(rf: Stack, project: str) -> None:
    uuid = rf.boot(project)
    mig_id = resize_to_verify(rf, project, uuid)
    rf.set_failpoints(
        {
            "resizeflow.confirm.confirm_migration": [
                {"mode": "transient", "times": 2, "instance_uuid": uuid}
            ]
        }
    )
    rf.api.confirm_resize(rf.ctx(project), uuid)
    rf.wait_migration(mig_id, MigrationStatus.CONFIRMED)
    rf.wait_instance(uuid, VmState.ACTIVE)
    rows = {r.step.rsplit(".", 1)[1]: r for r in rf.journal(mig_id) if r.flow == "confirm"}
    assert (rows["confirm_migration"].attempts, rows["confirm_migration"].status) == (3, "done")
    assert rows["confirm_migration"].last_error is None
    assert {r.attempts for n, r in rows.items() if n != "confirm_migration"} == {1}
    assert step_events(rf, "confirmResize", uuid) == [("compute_confirm_resize", "Success")]
    assert rf.faults(uuid) == []


def assert_errored_out(rf: Stack, uuid: str, mig_id: int, failed_step: str, fault: str) -> None:
    inst = wait_for(
        lambda: (i := rf.instance(uuid)).vm_state == VmState.ERROR and i, what=f"{uuid} in ERROR"
    )
    assert inst.task_state is None
    assert rf.migration(mig_id).status == MigrationStatus.ERROR
    assert any(fault in f for f in rf.faults(uuid)), rf.faults(uuid)
    statuses = {r.step.rsplit(".", 1)[1]: r.status for r in rf.journal(mig_id)}
    assert statuses[failed_step] == JournalStatus.FAILED


def fail_for_good(rf: Stack, project: str, step: str) -> tuple[str, int]:
    """A server resized to VERIFY_RESIZE, then confirmed or reverted (the flow of
    ``step``, a ``flow.name`` or ``flow.name:hypervisor``) with ``step`` failing once,
    for good: its uuid and migration id, once the workflow has errored out."""
    uuid = rf.boot(project)
    mig_id = resize_to_verify(rf, project, uuid)
    name = step.partition(":")[0]
    rf.set_failpoints(
        {f"resizeflow.{step}": [{"mode": "fatal", "times": 1, "instance_uuid": uuid}]}
    )
    if name.startswith("confirm."):
        rf.api.confirm_resize(rf.ctx(project), uuid)
    else:
        rf.api.revert_resize(rf.ctx(project), uuid)
    assert_errored_out(rf, uuid, mig_id, name.rpartition(".")[2], "injected fatal failure")
    return uuid, mig_id


def test_permanent_failure_errors_the_workflow_out(rf: Stack, project: str) -> None:
    uuid = rf.boot(project)
    mig_id = resize_to_verify(rf, project, uuid)
    rf.set_failpoints(
        {"resizeflow.revert.destroy_dest_domain": [{"mode": "fatal", "instance_uuid": uuid}]}
    )
    rf.notifications()
    drain(rf, "error")
    rf.api.revert_resize(rf.ctx(project), uuid)
    assert_errored_out(rf, uuid, mig_id, "destroy_dest_domain", "injected fatal failure")
    statuses = [
        (r.step.rsplit(".", 1)[1], r.status) for r in rf.journal(mig_id) if r.flow == "revert"
    ]
    assert statuses == [
        ("teardown_dest_network", "done"),
        ("destroy_dest_domain", "failed"),
        ("terminate_volume_connections", "pending"),
        ("drop_dest_claim", "pending"),
        ("finish_revert", "pending"),
    ]
    # Nova's revert_resize, whose steps these are, failed.
    assert step_events(rf, "revertResize", uuid) == [("compute_revert_resize", "Error")]
    events = [n["event_type"] for n in rf.notifications()]
    assert events == ["instance.exists", "instance.resize_revert.start"]
    # Nova sends errors with priority ERROR, to versioned_notifications.error.
    errors = [n["event_type"] for n in drain(rf, "error")]
    assert errors == ["instance.resize_revert.error", "compute.exception"]


def test_a_failed_confirm_still_frees_the_source_allocation(rf: Stack, project: str) -> None:
    uuid = rf.boot(project)
    mig_id = resize_to_verify(rf, project, uuid)
    mig = rf.migration(mig_id)
    assert allocations(rf, mig.uuid) == {
        mig.source_compute: {"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 1}
    }
    rf.set_failpoints(
        {"resizeflow.confirm.confirm_migration": [{"mode": "fatal", "instance_uuid": uuid}]}
    )
    rf.api.confirm_resize(rf.ctx(project), uuid)
    assert_errored_out(rf, uuid, mig_id, "confirm_migration", "injected fatal failure")
    assert allocations(rf, mig.uuid) == {}


def test_retries_run_out(rf: Stack, project: str) -> None:
    uuid = rf.boot(project)
    mig_id = resize_to_verify(rf, project, uuid)
    rf.set_failpoints(
        {"resizeflow.confirm.drop_source_claim": [{"mode": "transient", "instance_uuid": uuid}]}
    )
    rf.api.confirm_resize(rf.ctx(project), uuid)
    assert_errored_out(rf, uuid, mig_id, "drop_source_claim", "injected transient failure")
    row = next(r for r in rf.journal(mig_id) if r.step.endswith("drop_source_claim"))
    assert row.attempts == rf.settings.step_max_retries + 1


def test_missing_resize_dir_fails_finish_revert(rf: Stack, project: str) -> None:
    """A real driver failure: the source copy is gone, so revert cannot restore it."""
    uuid = rf.boot(project)
    mig_id = resize_to_verify(rf, project, uuid)
    shutil.rmtree(rf.instance_dir(rf.migration(mig_id).source_compute, uuid, "_resize"))
    rf.api.revert_resize(rf.ctx(project), uuid)
    assert_errored_out(rf, uuid, mig_id, "finish_revert", "No disk at")


def test_finish_revert_failing_on_the_hypervisor_leaves_the_server_on_its_source(
    rf: Stack, project: str
) -> None:
    """Nova's finish_revert_resize moves flavor, host and allocation back before it
    calls the driver: if the domain never comes back, the server is in ERROR where
    its disks are, at their flavor, holding its own allocation."""
    uuid, mig_id = fail_for_good(rf, project, "revert.finish_revert:hypervisor")
    mig = rf.migration(mig_id)
    inst = rf.instance(uuid)
    assert (inst.host, inst.node) == (mig.source_compute, mig.source_node)
    assert inst.flavor["name"] == "m1.tiny"
    assert allocations(rf, uuid) == {
        mig.source_compute: {"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 1}
    }
    assert allocations(rf, mig.uuid) == {}
    # The step runs again from the start and finds all of that done already.
    WorkflowAdmin(rf.settings, rf.db, rf.app).retry(rf.admin(), mig_id)
    inst = rf.wait_instance(uuid, VmState.ACTIVE)
    assert (inst.host, inst.flavor["name"], inst.old_flavor) == (
        mig.source_compute,
        "m1.tiny",
        None,
    )
    assert rf.domains(mig.source_compute)[uuid]["vcpus"] == 1
    assert uuid not in rf.domains(mig.dest_compute)


def test_resize_failing_before_the_guest_is_touched_is_rolled_back(rf: Stack, project: str) -> None:
    """Nova's InstanceFaultRollback: the storage check fails before the power-off,
    so the server keeps its state, the migration errors out, and the claim on the
    dest is dropped."""
    uuid = rf.boot(project)
    source = rf.instance(uuid).host
    assert source is not None
    instances = rf.settings.instances_dir(source)
    # The shared-storage probe cannot create its file in the source's instances dir.
    subprocess.run(["chattr", "+i", str(instances)], check=True)
    try:
        mig_id = rf.api.resize(rf.ctx(project), uuid, "2")
        wait_for(lambda: rf.migration(mig_id).status == MigrationStatus.ERROR, 60)
        inst = rf.wait_instance(uuid, VmState.ACTIVE)
    finally:
        subprocess.run(["chattr", "-i", str(instances)], check=True)
    assert (inst.host, inst.flavor["name"]) == (source, "m1.tiny")
    assert (inst.old_flavor, inst.new_flavor) == (None, None)
    assert "old_vm_state" not in inst.system_metadata
    assert allocations(rf, uuid) == {source: {"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 1}}
    mig = rf.migration(mig_id)
    assert allocations(rf, mig.uuid) == {}
    assert any("Operation not permitted" in f for f in rf.faults(uuid)), rf.faults(uuid)
    assert step_events(rf, "resize", uuid) == [
        ("conductor_migrate_server", "Success"),
        ("cold_migrate", "Success"),
        ("compute_prep_resize", "Success"),
        ("compute_resize_instance", "Error"),
    ]
    statuses = {r.step.rsplit(".", 1)[1]: r.status for r in rf.journal(mig_id)}
    assert statuses == {
        "prep_resize": JournalStatus.DONE,
        "resize_instance": JournalStatus.FAILED,
        "finish_resize": JournalStatus.ABORTED,
    }
    assert rf.domains(source)[uuid]["power_state"] == "RUNNING"
    # Nothing to resume: the resize was rolled back. The user may resize again.
    with pytest.raises(errors.WorkflowNotFailed):
        WorkflowAdmin(rf.settings, rf.db, rf.app).retry(rf.admin(), mig_id)
    again = resize_to_verify(rf, project, uuid)
    assert rf.migration(again).status == MigrationStatus.FINISHED


def test_sigterm_finishes_the_running_step(rf: Stack, project: str) -> None:
    uuid = rf.boot(project)
    mig_id = resize_to_verify(rf, project, uuid)
    source = rf.migration(mig_id).source_compute
    # The SIGTERM must land while the step runs: the delay is what holds it
    # running, so it is long enough for the journal poll and the signal to get
    # through on a loaded machine. The test waits for it either way.
    rf.set_failpoints(
        {
            "resizeflow.confirm.confirm_migration": [
                {"mode": "delay", "seconds": 8, "times": 1, "instance_uuid": uuid}
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
    proc = rf.workers[source]
    try:
        rf.stop_worker(source)  # SIGTERM: Celery's warm shutdown
        assert proc.returncode == 0
        statuses = {r.step.rsplit(".", 1)[1]: r.status for r in rf.journal(mig_id)}
        assert statuses["confirm_migration"] == JournalStatus.DONE
        assert statuses["drop_source_claim"] == JournalStatus.PENDING
    finally:
        # The stack is shared by the module's tests: never leave a host without its worker.
        rf.start_worker(source)
    rf.wait_migration(mig_id, MigrationStatus.CONFIRMED)
    rf.wait_instance(uuid, VmState.ACTIVE)


def test_pickled_messages_are_refused(rf: Stack, project: str) -> None:
    """Workers accept JSON only: a pickled step message is never run."""
    uuid = rf.boot(project)
    mig_id = resize_to_verify(rf, project, uuid)
    before = snapshot(rf, uuid, mig_id)
    step = routing.plan(
        flows.FLOWS["confirm"], source=rf.migration(mig_id).source_compute, dest="x"
    )[0]
    routing.signature(rf.app, step.step, mig_id, step.host).apply_async(serializer="pickle")
    wait_for(
        lambda: "application/x-python-serialize" in rf.worker_log(step.host),
        30,
        "the worker to refuse the pickled message",
    )
    assert snapshot(rf, uuid, mig_id) == before
    assert rf.migration(mig_id).status == MigrationStatus.FINISHED
