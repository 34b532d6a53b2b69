"""Resize, confirm and revert end to end: real workers, Redis, libvirt test driver."""

from __future__ import annotations

from sqlalchemy import select

from resizeflow.db.models import Allocation, InstanceAction, InstanceActionEvent, Port, PortBinding
from resizeflow.flows import CONFIRM
from resizeflow.states import JournalStatus, MigrationStatus, PowerState, VmState
from tests.support.stack import Stack


def allocations(rf: Stack, consumer: str) -> dict[str, dict[str, int]]:
    from resizeflow.db.models import ComputeNode

    out: dict[str, dict[str, int]] = {}
    with rf.db.transaction() as s:
        rows = s.execute(
            select(ComputeNode.host, Allocation.resource_class, Allocation.used)
            .join(ComputeNode, ComputeNode.id == Allocation.node_id)
            .where(Allocation.consumer_uuid == consumer)
        )
        for host, rc, used in rows:
            out.setdefault(host, {})[rc] = used
    return out


def bound_hosts(rf: Stack, uuid: str) -> set[str]:
    with rf.db.transaction() as s:
        return set(
            s.scalars(
                select(PortBinding.host)
                .join(Port, Port.id == PortBinding.port_id)
                .where(Port.instance_uuid == uuid)
            )
        )


def step_events(rf: Stack, request_id_action: str, uuid: str) -> list[tuple[str, str | None]]:
    with rf.db.transaction() as s:
        action = s.scalars(
            select(InstanceAction).where(
                InstanceAction.instance_uuid == uuid, InstanceAction.action == request_id_action
            )
        ).one()
        return [
            (e.event, e.result)
            for e in s.scalars(
                select(InstanceActionEvent)
                .where(InstanceActionEvent.action_id == action.id)
                .order_by(InstanceActionEvent.id)
            )
        ]


def resize_to_verify(rf: Stack, project: str, uuid: str, flavor: str = "2") -> int:
    mig_id = rf.api.resize(rf.ctx(project), uuid, flavor)
    rf.wait_migration(mig_id, MigrationStatus.FINISHED)
    rf.wait_instance(uuid, VmState.RESIZED)
    return mig_id


def test_resize_then_confirm_active(rf: Stack, project: str) -> None:
    uuid = rf.boot(project)
    source = rf.instance(uuid).host
    assert source is not None
    assert allocations(rf, uuid) == {source: {"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 1}}

    mig_id = resize_to_verify(rf, project, uuid)
    mig = rf.migration(mig_id)
    dest = mig.dest_compute
    assert dest != source
    inst = rf.instance(uuid)
    assert (inst.host, inst.flavor["name"], inst.old_flavor["name"]) == (
        dest,
        "m1.small",
        "m1.tiny",
    )
    assert inst.power_state == PowerState.RUNNING
    # Migration-based allocations: the migration holds the source claim.
    assert allocations(rf, mig.uuid) == {source: {"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 1}}
    assert allocations(rf, uuid) == {dest: {"VCPU": 1, "MEMORY_MB": 2048, "DISK_GB": 20}}
    assert rf.instance_dir(source, uuid, "_resize").is_dir()
    assert rf.domains(dest)[uuid]["power_state"] == "RUNNING"
    assert rf.domains(source)[uuid]["power_state"] == "SHUTDOWN"
    rf.notifications()  # drain the resize's

    assert rf.api.confirm_resize(rf.ctx(project), uuid) == mig_id
    rf.wait_migration(mig_id, MigrationStatus.CONFIRMED)
    inst = rf.wait_instance(uuid, VmState.ACTIVE)
    assert (inst.host, inst.flavor["name"], inst.old_flavor, inst.new_flavor) == (
        dest,
        "m1.small",
        None,
        None,
    )
    assert "old_vm_state" not in inst.system_metadata
    assert allocations(rf, mig.uuid) == {}
    assert allocations(rf, uuid) == {dest: {"VCPU": 1, "MEMORY_MB": 2048, "DISK_GB": 20}}
    assert not rf.instance_dir(source, uuid, "_resize").exists()
    assert uuid not in rf.domains(source)
    assert rf.domains(dest)[uuid]["power_state"] == "RUNNING"
    assert bound_hosts(rf, uuid) == {dest}

    steps = [r for r in rf.journal(mig_id) if r.flow == "confirm"]
    assert [r.step for r in steps] == [s.task for s in CONFIRM.steps]
    assert all(
        r.status == JournalStatus.DONE and r.attempts == 1 and r.host == source for r in steps
    )
    assert step_events(rf, "confirmResize", uuid) == [("compute_confirm_resize", "Success")]
    events = [n["event_type"] for n in rf.notifications()]
    assert events == ["instance.resize_confirm.start", "instance.resize_confirm.end"]


def test_resize_then_revert_active(rf: Stack, project: str) -> None:
    uuid = rf.boot(project)
    source = rf.instance(uuid).host
    mig_id = resize_to_verify(rf, project, uuid)
    mig = rf.migration(mig_id)
    dest = mig.dest_compute

    rf.api.revert_resize(rf.ctx(project), uuid)
    rf.wait_migration(mig_id, MigrationStatus.REVERTED)
    inst = rf.wait_instance(uuid, VmState.ACTIVE)
    assert (inst.host, inst.node, inst.flavor["name"]) == (source, mig.source_node, "m1.tiny")
    assert inst.old_flavor is None and inst.power_state == PowerState.RUNNING
    assert allocations(rf, uuid) == {source: {"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 1}}
    assert allocations(rf, mig.uuid) == {}
    assert uuid not in rf.domains(dest)
    assert not rf.instance_dir(dest, uuid).exists()
    assert rf.instance_dir(source, uuid).is_dir()
    assert not rf.instance_dir(source, uuid, "_resize").exists()
    assert rf.domains(source)[uuid]["power_state"] == "RUNNING"
    assert rf.domains(source)[uuid]["memory_mb"] == 512
    assert bound_hosts(rf, uuid) == {source}
    hosts = [(r.step.rsplit(".", 1)[1], r.host) for r in rf.journal(mig_id) if r.flow == "revert"]
    assert hosts == [
        ("teardown_dest_network", dest),
        ("destroy_dest_domain", dest),
        ("terminate_volume_connections", dest),
        ("drop_dest_claim", dest),
        ("finish_revert", source),
    ]


def test_stopped_server_stays_stopped_through_resize_and_confirm(rf: Stack, project: str) -> None:
    uuid = rf.boot(project, stopped=True)
    mig_id = resize_to_verify(rf, project, uuid)
    dest = rf.migration(mig_id).dest_compute
    inst = rf.instance(uuid)
    assert inst.power_state == PowerState.SHUTDOWN
    assert inst.system_metadata["old_vm_state"] == "stopped"
    assert rf.domains(dest)[uuid]["power_state"] == "SHUTDOWN"

    rf.api.confirm_resize(rf.ctx(project), uuid)
    rf.wait_migration(mig_id, MigrationStatus.CONFIRMED)
    inst = rf.wait_instance(uuid, VmState.STOPPED)
    assert inst.power_state == PowerState.SHUTDOWN
    assert rf.domains(dest)[uuid]["power_state"] == "SHUTDOWN"


def test_stopped_server_stays_stopped_through_revert(rf: Stack, project: str) -> None:
    uuid = rf.boot(project, stopped=True)
    source = rf.instance(uuid).host
    assert source is not None
    mig_id = resize_to_verify(rf, project, uuid)

    rf.api.revert_resize(rf.ctx(project), uuid)
    rf.wait_migration(mig_id, MigrationStatus.REVERTED)
    inst = rf.wait_instance(uuid, VmState.STOPPED)
    assert (inst.host, inst.flavor["name"], inst.power_state) == (
        source,
        "m1.tiny",
        PowerState.SHUTDOWN,
    )
    assert rf.domains(source)[uuid]["power_state"] == "SHUTDOWN"
    # As Nova's finish_revert_resize, which stops it with its own stop_instance.
    assert sorted(step_events(rf, "revertResize", uuid)) == [
        ("compute_finish_revert_resize", "Success"),
        ("compute_revert_resize", "Success"),
        ("compute_stop_instance", "Success"),
    ]


def test_same_host_resize_confirm_keeps_the_domain(rf: Stack, project: str) -> None:
    uuid = rf.boot(project)
    host = rf.instance(uuid).host
    assert host is not None
    mig_id = rf.api.resize(rf.admin(), uuid, "2", host=host)
    rf.wait_migration(mig_id, MigrationStatus.FINISHED)
    rf.wait_instance(uuid, VmState.RESIZED)
    mig = rf.migration(mig_id)
    assert mig.source_compute == mig.dest_compute == host
    # Both claims sit on the one node until confirm, as in Nova.
    assert allocations(rf, mig.uuid) == {host: {"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 1}}
    assert allocations(rf, uuid) == {host: {"VCPU": 1, "MEMORY_MB": 2048, "DISK_GB": 20}}
    assert rf.instance_dir(host, uuid, "_resize").is_dir()

    rf.api.confirm_resize(rf.ctx(project), uuid)
    rf.wait_migration(mig_id, MigrationStatus.CONFIRMED)
    rf.wait_instance(uuid, VmState.ACTIVE)
    domain = rf.domains(host)[uuid]
    assert (domain["power_state"], domain["memory_mb"]) == ("RUNNING", 2048)
    assert not rf.instance_dir(host, uuid, "_resize").exists()
    assert (rf.instance_dir(host, uuid) / "disk").stat().st_size == 20 * 2**30
    assert bound_hosts(rf, uuid) == {host}
    assert allocations(rf, mig.uuid) == {}


def test_same_host_resize_revert_restores_the_old_domain(rf: Stack, project: str) -> None:
    uuid = rf.boot(project)
    host = rf.instance(uuid).host
    assert host is not None
    mig_id = rf.api.resize(rf.admin(), uuid, "2", host=host)
    rf.wait_migration(mig_id, MigrationStatus.FINISHED)
    rf.api.revert_resize(rf.ctx(project), uuid)
    rf.wait_migration(mig_id, MigrationStatus.REVERTED)
    rf.wait_instance(uuid, VmState.ACTIVE)
    domain = rf.domains(host)[uuid]
    assert (domain["power_state"], domain["memory_mb"]) == ("RUNNING", 512)
    assert (rf.instance_dir(host, uuid) / "disk").stat().st_size == 1 * 2**30
    assert bound_hosts(rf, uuid) == {host}


def test_delete_while_verify_resize_confirms_first(rf: Stack, project: str) -> None:
    uuid = rf.boot(project)
    source = rf.instance(uuid).host
    assert source is not None
    mig_id = resize_to_verify(rf, project, uuid)
    mig = rf.migration(mig_id)

    rf.api.delete(rf.ctx(project), uuid)
    rf.wait_migration(mig_id, MigrationStatus.CONFIRMED)
    wait_deleted(rf, uuid)
    assert allocations(rf, uuid) == {} and allocations(rf, mig.uuid) == {}
    assert not rf.instance_dir(source, uuid, "_resize").exists()
    assert not rf.instance_dir(mig.dest_compute, uuid).exists()
    assert uuid not in rf.domains(source) and uuid not in rf.domains(mig.dest_compute)
    assert bound_hosts(rf, uuid) == set()


def wait_deleted(rf: Stack, uuid: str) -> None:
    from tests.support.stack import wait_for

    wait_for(lambda: rf.instance(uuid).deleted, 60, f"{uuid} to be deleted")
    assert rf.instance(uuid).vm_state == VmState.DELETED
