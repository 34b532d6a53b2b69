"""Reboot, reset-state and the console log: Nova's way out of a failed operation."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from resizeflow import errors
from resizeflow.compute.workflow_admin import WorkflowAdmin
from resizeflow.db.models import Instance, InstanceAction, InstanceActionEvent, InstanceFault
from resizeflow.states import JournalStatus, MigrationStatus, PowerState, VmState
from tests.functional.test_api_stack import act, boot, client, server, wait_status
from tests.functional.test_flows import allocations, resize_to_verify, step_events
from tests.functional.test_operator import actions
from tests.functional.test_reliability import fail_for_good
from tests.support.stack import Stack, wait_for


def instance_rows(rf: Stack, uuid: str) -> list[tuple[str, str]]:
    """The instance operations' journal rows of a server, oldest first."""
    from sqlalchemy import select

    from resizeflow.db.models import StepJournal

    with rf.db.snapshot() as s:
        rows = s.scalars(
            select(StepJournal)
            .where(StepJournal.instance_uuid == uuid, StepJournal.migration_id.is_(None))
            .order_by(StepJournal.id)
        )
        return [(r.flow, r.status) for r in rows]


def until_active(rf: Stack, uuid: str) -> Instance:
    """Wait out a hard reboot of a server in ERROR: it shows ERROR until it is done."""
    return wait_for(
        lambda: (i := rf.instance(uuid)).vm_state == VmState.ACTIVE and i.task_state is None and i,
        60,
        f"{uuid} to be active",
    )


def console(http: object, uuid: str, length: object = None, code: int = 200) -> str:
    body = {"os-getConsoleOutput": {} if length is None else {"length": length}}
    resp = act(http, uuid, body, code)  # type: ignore[arg-type]
    output: str = resp.json()["output"] if code == 200 else resp.text
    return output


# -- reboot ---------------------------------------------------------------------
def test_soft_and_hard_reboot_as_nova_records_them(rf: Stack, project: str) -> None:
    uuid = rf.boot(project)
    host = rf.instance(uuid).host
    assert host is not None
    rf.notifications()
    rf.api.reboot(rf.ctx(project), uuid, "SOFT")
    inst = rf.wait_instance(uuid, VmState.ACTIVE)
    assert inst.power_state == PowerState.RUNNING
    assert step_events(rf, "reboot", uuid) == [("compute_reboot_instance", "Success")]
    events = [n["event_type"] for n in rf.notifications()]
    assert events == ["instance.reboot.start", "instance.reboot.end"]
    assert rf.domains(host)[uuid]["power_state"] == "RUNNING"
    # A hard reboot of a stopped server starts it, as Nova's does.
    rf.api.stop(rf.ctx(project), uuid)
    rf.wait_instance(uuid, VmState.STOPPED)
    with pytest.raises(errors.InstanceInvalidState):
        rf.api.reboot(rf.ctx(project), uuid, "SOFT")
    rf.api.reboot(rf.ctx(project), uuid, "HARD")
    inst = rf.wait_instance(uuid, VmState.ACTIVE)
    assert inst.power_state == PowerState.RUNNING
    assert rf.domains(host)[uuid]["power_state"] == "RUNNING"
    assert [f for f, _ in instance_rows(rf, uuid)] == [
        "spawn",
        "soft_reboot",
        "stop",
        "hard_reboot",
    ]


def test_a_hard_reboot_takes_over_a_soft_one_in_flight(rf: Stack, project: str) -> None:
    uuid = rf.boot(project)
    rf.set_failpoints(
        {
            "resizeflow.instance.soft_reboot:hypervisor": [
                {"mode": "delay", "seconds": 3, "times": 1, "instance_uuid": uuid}
            ]
        }
    )
    rf.api.reboot(rf.ctx(project), uuid, "SOFT")
    wait_for(lambda: instance_rows(rf, uuid)[-1] == ("soft_reboot", "running"), 30)
    # A second soft reboot is refused; a hard one takes over, as Nova allows.
    with pytest.raises(errors.InstanceInvalidState):
        rf.api.reboot(rf.ctx(project), uuid, "SOFT")
    rf.api.reboot(rf.ctx(project), uuid, "HARD")
    inst = rf.wait_instance(uuid, VmState.ACTIVE)
    time.sleep(3.5)  # the soft reboot's hypervisor work ends, and must commit nothing
    assert instance_rows(rf, uuid)[-2:] == [("soft_reboot", "aborted"), ("hard_reboot", "done")]
    assert rf.instance(uuid).task_state is None and inst.power_state == PowerState.RUNNING
    # The soft reboot failed as Nova's compute fails it, finding the task state changed:
    # its event and action say Error, and the server has the fault; the hard one succeeded.
    with rf.db.snapshot() as s:
        soft, hard = s.scalars(
            select(InstanceAction)
            .where(InstanceAction.instance_uuid == uuid, InstanceAction.action == "reboot")
            .order_by(InstanceAction.id)
        ).all()

        def events(action: InstanceAction) -> list[tuple[str, str | None]]:
            found = s.scalars(
                select(InstanceActionEvent).where(InstanceActionEvent.action_id == action.id)
            )
            return [(e.event, e.result) for e in found]

        assert (soft.message, events(soft)) == ("Error", [("compute_reboot_instance", "Error")])
        assert (hard.message, events(hard)) == (None, [("compute_reboot_instance", "Success")])
        fault = s.scalars(
            select(InstanceFault)
            .where(InstanceFault.instance_uuid == uuid)
            .order_by(InstanceFault.id.desc())
        ).first()
        assert fault is not None
        assert (fault.code, fault.message) == (
            500,
            f"Conflict updating instance {uuid}. Expected: {{'task_state': ['rebooting', "
            "'reboot_pending', 'reboot_started']}. Actual: {'task_state': 'rebooting_hard'}",
        )


def test_hard_reboot_brings_back_a_server_a_failed_confirm_left_in_error(
    rf: Stack, project: str
) -> None:
    """Nova's advice after a confirm that failed: hard reboot the server."""
    uuid, mig_id = fail_for_good(rf, project, "confirm.confirm_migration")
    mig = rf.migration(mig_id)
    rf.api.reboot(rf.ctx(project), uuid, "HARD")
    inst = until_active(rf, uuid)
    assert (inst.host, inst.flavor["name"]) == (mig.dest_compute, "m1.small")
    assert rf.domains(mig.dest_compute)[uuid]["memory_mb"] == 2048
    assert rf.domains(mig.dest_compute)[uuid]["power_state"] == "RUNNING"


def test_hard_reboot_after_a_revert_that_failed_takes_the_disks_back(
    rf: Stack, project: str
) -> None:
    """finish_revert put the server back on its source, then its domain never came
    back: the disks are still in <uuid>_resize, and a hard reboot there restores it."""
    uuid, mig_id = fail_for_good(rf, project, "revert.finish_revert:hypervisor")
    mig = rf.migration(mig_id)
    source = mig.source_compute
    assert rf.instance_dir(source, uuid, "_resize").exists()
    assert not rf.instance_dir(source, uuid).exists()

    rf.api.reboot(rf.ctx(project), uuid, "HARD")
    inst = until_active(rf, uuid)
    assert (inst.host, inst.flavor["name"]) == (source, "m1.tiny")
    assert (rf.instance_dir(source, uuid) / "disk").exists()
    assert not rf.instance_dir(source, uuid, "_resize").exists()
    domain = rf.domains(source)[uuid]
    assert (domain["memory_mb"], domain["power_state"]) == (512, "RUNNING")
    assert list(allocations(rf, uuid)) == [source]


# -- reset-state ----------------------------------------------------------------
def test_reset_state_ends_the_failed_workflow_it_declares_over(rf: Stack, project: str) -> None:
    uuid, mig_id = fail_for_good(rf, project, "revert.drop_dest_claim")
    with pytest.raises(errors.PolicyNotAuthorized):
        rf.api.reset_state(rf.ctx(project), uuid, VmState.ACTIVE)
    rf.api.reset_state(rf.admin(), uuid, VmState.ACTIVE)
    inst = rf.instance(uuid)
    assert (inst.vm_state, inst.task_state) == (VmState.ACTIVE, None)
    revert = [r for r in rf.journal(mig_id) if r.flow == "revert"]
    assert [r.status for r in revert] == ["done", "done", "done", "failed", "aborted"]
    assert all(r.restore is None for r in revert)
    # The operator declared the state: the workflow cannot be resumed over it.
    with pytest.raises(errors.WorkflowNotFailed):
        WorkflowAdmin(rf.settings, rf.db, rf.app).retry(rf.admin(), mig_id)
    rf.api.reset_state(rf.admin(), uuid, VmState.ERROR)
    assert rf.instance(uuid).vm_state == VmState.ERROR
    assert actions(rf, uuid)[-2:] == ["resetState", "resetState"]


def test_reset_state_after_a_failed_resize_leaves_the_claims_it_declares(
    rf: Stack, project: str
) -> None:
    """A resize fails for good in resize_instance: the server holds the new flavor on
    the dest, its migration the old one on the source. Reset to active where it is,
    the server holds its own flavor on its host, and the migration nothing."""
    uuid = rf.boot(project)
    rf.set_failpoints(
        {"resizeflow.resize.resize_instance": [{"mode": "fatal", "instance_uuid": uuid}]}
    )
    mig_id = rf.api.resize(rf.ctx(project), uuid, "2")
    wait_for(lambda: rf.migration(mig_id).status == MigrationStatus.ERROR, 30, "the error")
    mig = rf.migration(mig_id)
    assert len(allocations(rf, uuid)) + len(allocations(rf, mig.uuid)) == 2, "both claims left"
    rf.api.reset_state(rf.admin(), uuid, VmState.ACTIVE)
    inst = rf.instance(uuid)
    assert inst.host == mig.source_compute
    assert allocations(rf, uuid) == {
        mig.source_compute: {"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 1}
    }
    assert allocations(rf, mig.uuid) == {}


def test_reset_state_ends_a_workflow_still_open(rf: Stack, project: str) -> None:
    """A confirm waits in the queue of a source whose worker died: the operator
    declares the server active, and the confirm, when its host is back, does nothing."""
    uuid = rf.boot(project)
    mig_id = resize_to_verify(rf, project, uuid)
    mig = rf.migration(mig_id)
    rf.kill_worker(mig.source_compute)  # its service still looks up for a while
    try:
        rf.api.confirm_resize(rf.ctx(project), uuid)
        rf.api.reset_state(rf.admin(), uuid, VmState.ACTIVE)
    finally:
        rf.start_worker(mig.source_compute)
    assert rf.migration(mig_id).status == MigrationStatus.ERROR
    confirm = [r.status for r in rf.journal(mig_id) if r.flow == "confirm"]
    assert confirm == [JournalStatus.ABORTED] * 4
    time.sleep(1)  # the confirm's first message reaches the restarted worker
    inst = rf.instance(uuid)
    assert (inst.vm_state, inst.task_state, inst.host) == (VmState.ACTIVE, None, mig.dest_compute)
    assert [r.status for r in rf.journal(mig_id) if r.flow == "confirm"] == confirm
    assert rf.instance_dir(mig.source_compute, uuid, "_resize").exists()


# -- over HTTP, as Nova answers -----------------------------------------------------------
def test_reboot_reset_state_and_console_over_http(rf: Stack, project: str) -> None:
    with client(rf, f"alice:{project}") as http, client(rf) as admin:
        uuid = boot(http)
        source = server(admin, uuid)["OS-EXT-SRV-ATTR:host"]
        act(http, uuid, {"reboot": {"type": "soft"}}, 202)
        wait_status(http, uuid, "ACTIVE")
        bad = act(http, uuid, {"reboot": {"type": "warm"}}, 400).json()["badRequest"]["message"]
        assert bad == (
            "Invalid input for field/attribute type. Value: warm. 'warm' is not one of "
            "['HARD', 'Hard', 'hard', 'SOFT', 'Soft', 'soft']"
        )
        missing = act(http, uuid, {"reboot": {}}, 400).json()["badRequest"]["message"]
        assert missing.endswith("'type' is a required property")
        act(http, uuid, {"lock": None}, 202)
        locked = act(http, uuid, {"reboot": {"type": "HARD"}}, 409).json()
        assert locked["conflictingRequest"]["message"] == f"Instance {uuid} is locked"
        act(http, uuid, {"unlock": None}, 202)

        # The console log is the host's: the test driver notes each start and stop.
        first = console(http, uuid)
        assert f"started on {source}: 1 vCPU, 512 MiB" in first
        assert first.count("started on") == 2  # the boot and the soft reboot
        assert console(http, uuid, 1) == ""  # the log ends with a newline
        assert console(http, uuid, "2").count("\n") == 1
        assert console(http, uuid, 0) == ""
        assert console(http, uuid, -1) == "\n".join(first.split("\n")[1:])  # Nova's -1
        odd = act(http, uuid, {"os-getConsoleOutput": {"length": "ten"}}, 400).json()
        assert "Invalid input for field/attribute length" in odd["badRequest"]["message"]

        act(http, uuid, {"resize": {"flavorRef": "2"}}, 202)
        wait_status(http, uuid, "VERIFY_RESIZE")
        dest = server(admin, uuid)["OS-EXT-SRV-ATTR:host"]
        resized = console(http, uuid)
        assert resized.strip() == (
            f"{rf.settings.instance_name_template.format(uuid=uuid, host=dest)} "
            f"started on {dest}: 1 vCPU, 2048 MiB"
        )
        act(http, uuid, {"revertResize": None}, 202)
        wait_status(http, uuid, "ACTIVE")
        reverted = console(http, uuid)
        assert reverted.startswith(first) and f"stopped on {source}" in reverted
        assert reverted.rstrip().endswith(f"started on {source}: 1 vCPU, 512 MiB")

        # reset-state: admin only, Nova's two states.
        denied = act(http, uuid, {"os-resetState": {"state": "error"}}, 403).json()
        assert "os_compute_api:os-admin-actions:reset_state" in denied["forbidden"]["message"]
        act(admin, uuid, {"os-resetState": {"state": "error"}}, 202)
        assert server(http, uuid)["status"] == "ERROR"
        wrong = act(admin, uuid, {"os-resetState": {"state": "stopped"}}, 400).json()
        assert "'stopped' is not one of ['active', 'error']" in wrong["badRequest"]["message"]
        conflict = act(http, uuid, {"reboot": {"type": "SOFT"}}, 409).json()
        assert conflict["conflictingRequest"]["message"] == (
            f"Cannot 'reboot' instance {uuid} while it is in vm_state error"
        )
        act(http, uuid, {"reboot": {"type": "HARD"}}, 202)
        assert until_active(rf, uuid).power_state == PowerState.RUNNING


def test_console_of_a_host_that_is_down_is_refused_at_once(rf: Stack, project: str) -> None:
    uuid = rf.boot(project)
    host = rf.instance(uuid).host
    assert host is not None
    rf.stop_worker(host)  # a clean stop: the service is down at once
    try:
        started = time.monotonic()
        with pytest.raises(errors.ServiceUnavailable) as refused:
            rf.api.console_output(rf.ctx(project), uuid, None)
        # Refused from its service record, not after asking the host and waiting out
        # the call's timeout (that is HostDidNotAnswer, after host_call_timeout).
        assert type(refused.value) is errors.ServiceUnavailable
        assert time.monotonic() - started < rf.settings.host_call_timeout / 2
        assert refused.value.code == 409
    finally:
        rf.start_worker(host)
    assert "started on" in rf.api.console_output(rf.ctx(project), uuid, None)


def test_a_move_after_a_reset_ends_the_resize_the_reset_left_finished(
    rf: Stack, project: str
) -> None:
    """A reset-state leaves a resize awaiting confirmation ``finished`` (the
    periodic task errors it out later). A new move of the server must not leave
    two finished migrations: the auto-confirm would then confirm the stale one
    over the server's new resize."""
    from resizeflow.db.models import utcnow
    from resizeflow.periodic import confirm_unconfirmed_resizes

    uuid = rf.boot(project)
    first = resize_to_verify(rf, project, uuid)
    rf.api.reset_state(rf.admin(), uuid, VmState.ACTIVE)
    assert rf.migration(first).status == MigrationStatus.FINISHED
    second = rf.api.migrate(rf.admin(), uuid)
    assert rf.migration(first).status == MigrationStatus.ERROR
    wait_for(
        lambda: (
            rf.migration(second).status == MigrationStatus.FINISHED
            and rf.instance(uuid).task_state is None
        ),
        90,
        "the cold migration to finish",
    )
    future = utcnow().replace(year=utcnow().year + 1)
    swept = confirm_unconfirmed_resizes(rf.api, 1, now=future)
    # The stack is shared with the module's other tests, whose resizes the sweep
    # may also confirm: judge this server's two migrations only.
    mine = {first, second}
    assert [m for m in swept.confirmed if m in mine] == [second]
    assert [m for m in swept.errored if m in mine] == []
