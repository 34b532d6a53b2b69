"""Cold migration: Nova's ``migrate`` action through the resize, confirm and revert flows."""

from __future__ import annotations

import pytest

from resizeflow import errors
from resizeflow.states import MigrationStatus, VmState
from tests.functional.test_api_stack import act, boot, client, server, wait_status
from tests.functional.test_flows import allocations, step_events
from tests.support.stack import Stack

# Nova's conductor schedules the move, then the compute hosts run it.
MOVE_EVENTS = [
    ("conductor_migrate_server", "Success"),
    ("cold_migrate", "Success"),
    ("compute_prep_resize", "Success"),
    ("compute_resize_instance", "Success"),
    ("compute_finish_resize", "Success"),
]


def other(rf: Stack, host: str) -> str:
    (found,) = [h for h in rf.hosts if h != host]
    return found


def test_migrate_then_confirm_moves_the_server_at_its_flavor(rf: Stack, project: str) -> None:
    uuid = rf.boot(project)
    before = rf.instance(uuid)
    assert before.host is not None
    mig_id = rf.api.migrate(rf.admin(), uuid)
    rf.wait_migration(mig_id, MigrationStatus.FINISHED)
    inst = rf.wait_instance(uuid, VmState.RESIZED)
    mig = rf.migration(mig_id)
    assert mig.migration_type == "migration"
    assert mig.old_instance_type_id == mig.new_instance_type_id == before.flavor["id"]
    assert (mig.source_compute, mig.dest_compute) == (before.host, other(rf, before.host))
    assert inst.host == mig.dest_compute and inst.flavor == before.flavor
    assert step_events(rf, "migrate", uuid) == MOVE_EVENTS
    # Both hosts hold the flavor until the user confirms.
    assert allocations(rf, mig.uuid) == {mig.source_compute: {"VCPU": 1, "MEMORY_MB": 512,
                                                                "DISK_GB": 1}}  # fmt: skip
    assert allocations(rf, uuid) == {mig.dest_compute: {"VCPU": 1, "MEMORY_MB": 512,
                                                         "DISK_GB": 1}}  # fmt: skip

    rf.api.confirm_resize(rf.ctx(project), uuid)
    rf.wait_migration(mig_id, MigrationStatus.CONFIRMED)
    inst = rf.wait_instance(uuid, VmState.ACTIVE)
    assert inst.host == mig.dest_compute and inst.flavor == before.flavor
    assert uuid not in rf.domains(mig.source_compute)
    assert rf.domains(mig.dest_compute)[uuid]["vcpus"] == 1
    assert allocations(rf, mig.uuid) == {}


def test_migrate_then_revert_of_a_stopped_server(rf: Stack, project: str) -> None:
    uuid = rf.boot(project, stopped=True)
    source = rf.instance(uuid).host
    assert source is not None
    dest = other(rf, source)
    mig_id = rf.api.migrate(rf.admin(), uuid, host=dest)
    rf.wait_migration(mig_id, MigrationStatus.FINISHED)
    assert rf.wait_instance(uuid, VmState.RESIZED).host == dest
    assert rf.domains(dest)[uuid]["power_state"] == "SHUTDOWN"

    rf.api.revert_resize(rf.ctx(project), uuid)
    rf.wait_migration(mig_id, MigrationStatus.REVERTED)
    inst = rf.wait_instance(uuid, VmState.STOPPED)
    assert inst.host == source
    assert uuid not in rf.domains(dest)
    assert rf.domains(source)[uuid]["power_state"] == "SHUTDOWN"
    assert allocations(rf, rf.migration(mig_id).uuid) == {}
    assert list(allocations(rf, uuid)) == [source]


def test_a_move_no_host_can_take_is_accepted_and_fails_as_novas_conductor_does(
    rf: Stack, project: str
) -> None:
    """With the only other host down, Nova's conductor finds no host after the API
    has answered: the migration ends in error, the server keeps its state."""
    uuid = rf.boot(project)
    source = rf.instance(uuid).host
    assert source is not None
    down = other(rf, source)
    rf.stop_worker(down)
    try:
        mig_id = rf.api.migrate(rf.admin(), uuid)
    finally:
        rf.start_worker(down)
    mig = rf.migration(mig_id)
    assert (mig.status, mig.dest_compute, mig.dest_node) == (MigrationStatus.ERROR, None, None)
    inst = rf.instance(uuid)
    assert (inst.vm_state, inst.task_state, inst.host) == (VmState.ACTIVE, None, source)
    assert (inst.old_flavor, inst.new_flavor) == (None, None)
    assert rf.faults(uuid)[-1] == "No valid host was found. There are not enough hosts available."
    assert step_events(rf, "migrate", uuid) == [
        ("conductor_migrate_server", "Error"),
        ("cold_migrate", "Error"),
    ]
    assert allocations(rf, mig.uuid) == {}
    assert rf.journal(mig_id) == []
    # The host is back: the same request now succeeds.
    again = rf.api.migrate(rf.admin(), uuid)
    rf.wait_migration(again, MigrationStatus.FINISHED)
    assert rf.wait_instance(uuid, VmState.RESIZED).host == down


def test_migrate_over_http_as_nova_answers(rf: Stack, project: str) -> None:
    with client(rf, f"alice:{project}") as http, client(rf) as admin:
        uuid = boot(http)
        source = server(admin, uuid)["OS-EXT-SRV-ATTR:host"]
        # Only an admin (or the project's manager) migrates, and only an admin names the host.
        denied = act(http, uuid, {"migrate": None}, 403).json()
        assert denied["forbidden"]["message"] == (
            "Policy doesn't allow os_compute_api:os-migrate-server:migrate to be performed."
        )
        same = act(admin, uuid, {"migrate": {"host": source}}, 400).json()
        assert same["badRequest"]["message"] == (
            "Cannot migrate to the host where the server exists."
        )
        unknown = act(admin, uuid, {"migrate": {"host": "nowhere"}}, 400).json()
        assert unknown["badRequest"]["message"] == "Compute host nowhere could not be found."
        bad = act(admin, uuid, {"migrate": {"host": "no way"}}, 400).json()
        assert "Invalid input for field/attribute host" in bad["badRequest"]["message"]
        extra = act(admin, uuid, {"migrate": {"hostname": "x"}}, 400).json()
        assert "('hostname' was unexpected)" in extra["badRequest"]["message"]
        # Before 2.56 the body's host is not looked at, as in Nova.
        old = admin.post(
            f"/servers/{uuid}/action",
            json={"migrate": {"host": source}},
            headers={"OpenStack-API-Version": "compute 2.55"},
        )
        assert old.status_code == 202, old.text
        shown = wait_status(admin, uuid, "VERIFY_RESIZE")
        assert shown["OS-EXT-SRV-ATTR:host"] != source
        conflict = act(admin, uuid, {"migrate": None}, 409).json()
        assert conflict["conflictingRequest"]["message"] == (
            f"Cannot 'migrate' instance {uuid} while it is in vm_state resized"
        )
        act(http, uuid, {"confirmResize": None}, 204)
        wait_status(http, uuid, "ACTIVE")


def test_the_service_layer_refuses_what_nova_refuses(rf: Stack, project: str) -> None:
    uuid = rf.boot(project)
    source = rf.instance(uuid).host
    assert source is not None
    with pytest.raises(errors.PolicyNotAuthorized):
        rf.api.migrate(rf.ctx(project), uuid)
    with pytest.raises(errors.PolicyNotAuthorized):
        rf.api.migrate(rf.ctx(project, roles=("manager",)), uuid, host=other(rf, source))
    with pytest.raises(errors.CannotMigrateToSameHost):
        rf.api.migrate(rf.admin(), uuid, host=source)
    with pytest.raises(errors.ComputeHostNotFound):
        rf.api.migrate(rf.admin(), uuid, host="nowhere")
    # The project's manager may migrate its own servers.
    mig_id = rf.api.migrate(rf.ctx(project, roles=("manager", "member")), uuid)
    rf.wait_migration(mig_id, MigrationStatus.FINISHED)
    rf.api.revert_resize(rf.ctx(project), uuid)
    rf.wait_migration(mig_id, MigrationStatus.REVERTED)
    assert rf.wait_instance(uuid, VmState.ACTIVE).host == source
