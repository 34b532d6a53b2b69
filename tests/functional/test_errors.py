"""Every refusal of the service layer, with Nova's exception and message."""

from __future__ import annotations

import re

import pytest

from resizeflow import errors
from resizeflow.db.models import Flavor, QuotaLimit
from resizeflow.states import MigrationStatus, VmState
from tests.functional.test_flows import resize_to_verify
from tests.support.stack import Stack


def test_confirm_and_revert_of_a_server_never_resized(rf: Stack, project: str) -> None:
    uuid = rf.boot(project)
    for call, method in (
        (rf.api.confirm_resize, "confirm_resize"),
        (rf.api.revert_resize, "revert_resize"),
    ):
        with pytest.raises(errors.InstanceInvalidState) as exc:
            call(rf.ctx(project), uuid)
        assert exc.value.code == 409
        assert exc.value.message == (
            f"Instance {uuid} in vm_state active. Cannot {method} while the instance is in "
            "this state."
        )


def test_not_resized_while_a_confirm_is_underway(rf: Stack, project: str) -> None:
    """Once a confirm has moved the migration on from ``finished``, a second
    confirm or a revert gets Nova's "not resized" answer."""
    uuid = rf.boot(project)
    mig_id = resize_to_verify(rf, project, uuid)
    # Transient failures keep the confirm underway (retrying with backoff)
    # without holding any lock, so the calls below are answered at once.
    retries = rf.settings.step_max_retries
    rf.set_failpoints(
        {
            "resizeflow.confirm.teardown_source_network": [
                {"mode": "transient", "times": retries, "instance_uuid": uuid}
            ]
        }
    )
    rf.api.confirm_resize(rf.ctx(project), uuid)
    for call in (rf.api.confirm_resize, rf.api.revert_resize):
        with pytest.raises(errors.InstanceNotResized) as exc:
            call(rf.ctx(project), uuid)
        assert (exc.value.code, exc.value.message) == (400, "Instance has not been resized.")
    rf.wait_migration(mig_id, MigrationStatus.CONFIRMED)
    # The losing revert rolled its task_state change back.
    assert rf.wait_instance(uuid, VmState.ACTIVE).task_state is None


def test_host_down_refuses_confirm_and_revert(rf: Stack, project: str) -> None:
    uuid = rf.boot(project)
    mig_id = resize_to_verify(rf, project, uuid)
    mig = rf.migration(mig_id)
    rf.stop_worker(mig.source_compute)
    try:
        with pytest.raises(errors.ServiceUnavailable) as exc:
            rf.api.confirm_resize(rf.ctx(project), uuid)
        assert (exc.value.code, exc.value.message) == (409, "Service is unavailable at this time.")
        assert rf.migration(mig_id).status == MigrationStatus.FINISHED
    finally:
        rf.start_worker(mig.source_compute)
    rf.stop_worker(mig.dest_compute)
    try:
        with pytest.raises(errors.ServiceUnavailable):
            rf.api.revert_resize(rf.ctx(project), uuid)
        assert rf.instance(uuid).task_state is None
    finally:
        rf.start_worker(mig.dest_compute)
    # The restarted source worker redefined the old domain from <uuid>_resize,
    # so the confirm can undefine it.
    assert rf.domains(mig.source_compute)[uuid]["power_state"] == "SHUTDOWN"
    rf.api.confirm_resize(rf.ctx(project), uuid)
    rf.wait_migration(mig_id, MigrationStatus.CONFIRMED)
    rf.wait_instance(uuid, VmState.ACTIVE)
    assert uuid not in rf.domains(mig.source_compute)


def test_wrong_states(rf: Stack, project: str) -> None:
    uuid = rf.boot(project, stopped=True)
    with pytest.raises(
        errors.InstanceInvalidState, match=re.escape("in vm_state stopped. Cannot confirm")
    ):
        rf.api.confirm_resize(rf.ctx(project), uuid)
    with pytest.raises(
        errors.InstanceInvalidState, match=re.escape("in vm_state stopped. Cannot stop")
    ):
        rf.api.stop(rf.ctx(project), uuid)
    resize_to_verify(rf, project, uuid)
    with pytest.raises(
        errors.InstanceInvalidState, match=re.escape("in vm_state resized. Cannot resize")
    ):
        rf.api.resize(rf.ctx(project), uuid, "3")
    with pytest.raises(
        errors.InstanceInvalidState, match=re.escape("in vm_state resized. Cannot start")
    ):
        rf.api.start(rf.ctx(project), uuid)
    rf.api.revert_resize(rf.ctx(project), uuid)
    # The revert holds task_state until it finishes; a second action in between
    # is refused on task_state (or, once it finished, on vm_state).
    with pytest.raises(errors.InstanceInvalidState):
        rf.api.confirm_resize(rf.ctx(project), uuid)
    rf.wait_instance(uuid, VmState.STOPPED)


def test_locked_server(rf: Stack, project: str) -> None:
    uuid = rf.boot(project)
    mig_id = resize_to_verify(rf, project, uuid)
    owner, other_member = rf.ctx(project, "alice"), rf.ctx(project, "bob")
    rf.api.lock(owner, uuid)
    inst = rf.instance(uuid)
    assert (inst.locked, inst.locked_by) == (True, "owner")
    for call in (rf.api.confirm_resize, rf.api.revert_resize, rf.api.delete):
        with pytest.raises(errors.InstanceIsLocked) as exc:
            call(other_member, uuid)
        assert (exc.value.code, exc.value.message) == (409, f"Instance {uuid} is locked")
    assert rf.migration(mig_id).status == MigrationStatus.FINISHED
    # An admin is not held back by the lock.
    rf.api.confirm_resize(rf.admin(), uuid)
    rf.wait_migration(mig_id, MigrationStatus.CONFIRMED)
    rf.wait_instance(uuid, VmState.ACTIVE)
    rf.api.unlock(owner, uuid)
    assert rf.instance(uuid).locked is False


def test_admin_lock_is_only_lifted_by_an_admin(rf: Stack, project: str) -> None:
    uuid = rf.boot(project)
    rf.api.lock(rf.admin(), uuid)
    assert rf.instance(uuid).locked_by == "admin"
    with pytest.raises(errors.PolicyNotAuthorized) as exc:
        rf.api.unlock(rf.ctx(project), uuid)
    assert exc.value.code == 403
    rf.api.unlock(rf.admin(), uuid)
    assert rf.instance(uuid).locked is False


def test_another_projects_server_is_not_found(rf: Stack, project: str) -> None:
    uuid = rf.boot(project)
    stranger = rf.ctx("someone-else")
    calls = (
        lambda: rf.api.resize(stranger, uuid, "2"),
        lambda: rf.api.confirm_resize(stranger, uuid),
        lambda: rf.api.revert_resize(stranger, uuid),
        lambda: rf.api.stop(stranger, uuid),
        lambda: rf.api.lock(stranger, uuid),
        lambda: rf.api.delete(stranger, uuid),
    )
    for call in calls:
        with pytest.raises(errors.InstanceNotFound) as exc:
            call()
        assert (exc.value.code, exc.value.message) == (404, f"Instance {uuid} could not be found.")
    for bad in ("not-a-uuid", "../../etc/passwd", "00000000-0000-0000-0000-000000000000"):
        with pytest.raises(errors.InstanceNotFound):
            rf.api.confirm_resize(rf.ctx(project), bad)


def test_bad_resize_requests(rf: Stack, project: str) -> None:
    uuid = rf.boot(project, flavor="2")
    ctx = rf.ctx(project)
    with pytest.raises(
        errors.CannotResizeToSameFlavor, match=re.escape("instances must change flavor!")
    ):
        rf.api.resize(ctx, uuid, "2")
    with pytest.raises(errors.FlavorNotFound, match=re.escape("Flavor 42 could not be found.")):
        rf.api.resize(ctx, uuid, "42")
    with pytest.raises(errors.CannotResizeDisk, match=re.escape("Unable to resize disk down.")):
        rf.api.resize(ctx, uuid, "1")
    with pytest.raises(errors.PolicyNotAuthorized):
        rf.api.resize(ctx, uuid, "3", host="host1")
    with rf.db.transaction() as s:
        s.add(QuotaLimit(project_id=project, resource="cores", hard_limit=2))
    with pytest.raises(errors.OverQuota) as exc:
        rf.api.resize(ctx, uuid, "4")
    assert exc.value.code == 403
    assert exc.value.message == (
        "Quota exceeded for cores: Requested 3, but already used 1 of 2 cores"
    )
    assert rf.instance(uuid).task_state is None


def test_revert_of_a_downsize_checks_quota(rf: Stack, project: str) -> None:
    with rf.db.transaction() as s:
        if s.get(Flavor, 90) is None:
            s.add(
                Flavor(
                    id=90,
                    flavorid="small-disk40",
                    name="m1.medium-lowram",
                    vcpus=2,
                    memory_mb=2048,
                    root_gb=40,
                )
            )
        s.add(QuotaLimit(project_id=project, resource="ram", hard_limit=5120))
    uuid = rf.boot(project, flavor="3")  # 4096 MB
    mig_id = rf.api.resize(rf.ctx(project), uuid, "small-disk40")
    rf.wait_migration(mig_id, MigrationStatus.FINISHED)
    rf.boot(project, flavor="2")  # 2048 MB more: 4096 of 5120 used
    with pytest.raises(errors.OverQuota) as exc:
        rf.api.revert_resize(rf.ctx(project), uuid)
    assert exc.value.message == (
        "Quota exceeded for ram: Requested 2048, but already used 4096 of 5120 ram"
    )
    assert rf.migration(mig_id).status == MigrationStatus.FINISHED
    assert rf.instance(uuid).task_state is None
    rf.api.confirm_resize(rf.ctx(project), uuid)
    rf.wait_migration(mig_id, MigrationStatus.CONFIRMED)
