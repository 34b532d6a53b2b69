"""SqlPlacement and SqlQuota on real, upgraded SQLite and PostgreSQL databases."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from resizeflow.db.models import Allocation, ComputeNode, Instance, Migration, QuotaLimit
from resizeflow.db.session import Database
from resizeflow.errors import ClaimFailed, ComputeHostNotFound, OverQuota
from resizeflow.openstack.base import NodeRef, Resources
from resizeflow.openstack.placement import SqlPlacement
from resizeflow.openstack.quota import SqlQuota
from resizeflow.states import MigrationStatus, VmState
from tests.support.invariants import allocation_violations

# Capacity with ratios: 2 vcpus * 2.0 = 4, 4096 MB * 1.5 = 6144, 100 GB * 1.0 = 100.
N1, N2 = NodeRef("h1", "node-1"), NodeRef("h2", "node-2")
SMALL = Resources(vcpus=1, memory_mb=2048, disk_gb=20)
TINY = Resources(vcpus=1, memory_mb=512, disk_gb=1)
FLAVOR = {"id": 1, "vcpus": 2, "memory_mb": 4096, "root_gb": 40}


@pytest.fixture
def db(database: Database) -> Database:
    with database.transaction() as s:
        for ref in (N1, N2):
            s.add(
                ComputeNode(
                    host=ref.host,
                    node=ref.node,
                    vcpus=2,
                    memory_mb=4096,
                    local_gb=100,
                    cpu_allocation_ratio=2.0,
                    ram_allocation_ratio=1.5,
                    disk_allocation_ratio=1.0,
                )
            )
    return database


def add_instance(db: Database, project: str = "p1", flavor: dict[str, int] = FLAVOR) -> str:
    uid = str(uuid.uuid4())
    with db.transaction() as s:
        s.add(
            Instance(
                uuid=uid,
                project_id=project,
                user_id="u",
                host=N1.host,
                node=N1.node,
                flavor=flavor,
                vm_state=VmState.ACTIVE,
            )
        )
    return uid


def add_migration(db: Database, instance_uuid: str) -> str:
    uid = str(uuid.uuid4())
    with db.transaction() as s:
        s.add(
            Migration(
                uuid=uid,
                instance_uuid=instance_uuid,
                source_compute=N1.host,
                source_node=N1.node,
                dest_compute=N2.host,
                dest_node=N2.node,
                old_instance_type_id=1,
                new_instance_type_id=2,
                status=MigrationStatus.FINISHED,
            )
        )
    return uid


def usage(db: Database, ref: NodeRef) -> tuple[int, int, int]:
    with db.transaction() as s:
        n = s.scalars(select(ComputeNode).where(ComputeNode.host == ref.host)).one()
        return n.vcpus_used, n.memory_mb_used, n.local_gb_used


def held(db: Database, consumer: str) -> dict[tuple[str, str], int]:
    with db.transaction() as s:
        rows = s.execute(
            select(ComputeNode.host, Allocation.resource_class, Allocation.used)
            .join(ComputeNode, ComputeNode.id == Allocation.node_id)
            .where(Allocation.consumer_uuid == consumer)
        ).all()
    return {(host, rc): used for host, rc, used in rows}


def test_claim_and_release(db: Database) -> None:
    inst = add_instance(db)
    with db.transaction() as s:
        SqlPlacement(s).claim(inst, N1, SMALL)
    assert usage(db, N1) == (1, 2048, 20)
    assert usage(db, N2) == (0, 0, 0)
    assert held(db, inst) == {("h1", "VCPU"): 1, ("h1", "MEMORY_MB"): 2048, ("h1", "DISK_GB"): 20}
    assert allocation_violations(db) == []
    with db.transaction() as s:
        SqlPlacement(s).release(inst, N1)
        SqlPlacement(s).release(inst, N1)  # releasing nothing is fine
    assert usage(db, N1) == (0, 0, 0)
    assert held(db, inst) == {}
    assert allocation_violations(db) == []


def test_claim_twice_is_a_no_op(db: Database) -> None:
    inst = add_instance(db)
    for _ in range(2):
        with db.transaction() as s:
            SqlPlacement(s).claim(inst, N1, SMALL)
    assert usage(db, N1) == (1, 2048, 20)
    assert allocation_violations(db) == []


def test_capacity_respects_allocation_ratios(db: Database) -> None:
    # 4 one-vcpu claims fit 2 vcpus at ratio 2.0; the fifth does not.
    consumers = [add_instance(db) for _ in range(5)]
    with db.transaction() as s:
        p = SqlPlacement(s)
        for c in consumers[:4]:
            p.claim(c, N1, TINY)
        assert not p.can_fit(N1, TINY)
        assert p.can_fit(N2, Resources(vcpus=4, memory_mb=6144, disk_gb=100))
        assert not p.can_fit(N2, Resources(vcpus=1, memory_mb=6145, disk_gb=1))
    before = usage(db, N1)
    assert before == (4, 2048, 4)
    with db.transaction() as s:
        with pytest.raises(ClaimFailed, match=r"node-1 failed: not enough VCPU$"):
            SqlPlacement(s).claim(consumers[4], N1, TINY)
        # Nothing was written even inside the failed claim's own transaction.
        assert (
            s.scalars(select(Allocation).where(Allocation.consumer_uuid == consumers[4])).all()
            == []
        )
    assert usage(db, N1) == before
    assert held(db, consumers[4]) == {}
    assert allocation_violations(db) == []


def test_claim_over_several_classes_names_them(db: Database) -> None:
    inst = add_instance(db)
    with db.transaction() as s, pytest.raises(ClaimFailed) as info:
        SqlPlacement(s).claim(inst, N2, Resources(vcpus=5, memory_mb=6144, disk_gb=101))
    assert info.value.message.endswith("not enough VCPU, DISK_GB")
    assert usage(db, N2) == (0, 0, 0)


def test_move_hands_allocations_to_another_consumer(db: Database) -> None:
    inst = add_instance(db)
    mig = add_migration(db, inst)
    with db.transaction() as s:
        SqlPlacement(s).claim(inst, N1, SMALL)
    with db.transaction() as s:
        SqlPlacement(s).move(inst, mig, N1)
    assert held(db, inst) == {}
    assert held(db, mig) == {("h1", "VCPU"): 1, ("h1", "MEMORY_MB"): 2048, ("h1", "DISK_GB"): 20}
    assert usage(db, N1) == (1, 2048, 20)
    assert allocation_violations(db) == []
    # Moving from a consumer that holds nothing is a no-op (a redelivered step).
    with db.transaction() as s:
        SqlPlacement(s).move(inst, mig, N1)
    assert held(db, mig)[("h1", "VCPU")] == 1


def test_move_onto_a_holder_fails(db: Database) -> None:
    inst = add_instance(db)
    mig = add_migration(db, inst)
    with db.transaction() as s:
        SqlPlacement(s).claim(inst, N1, SMALL)
        SqlPlacement(s).claim(mig, N1, TINY)
    with db.transaction() as s, pytest.raises(ClaimFailed, match="already holds"):
        SqlPlacement(s).move(inst, mig, N1)
    assert held(db, inst)[("h1", "MEMORY_MB")] == 2048
    assert held(db, mig)[("h1", "MEMORY_MB")] == 512
    assert usage(db, N1) == (2, 2560, 21)


def test_release_everywhere(db: Database) -> None:
    inst, other = add_instance(db), add_instance(db)
    with db.transaction() as s:
        p = SqlPlacement(s)
        p.claim(inst, N1, SMALL)
        p.claim(inst, N2, TINY)
        p.claim(other, N2, TINY)
    with db.transaction() as s:
        SqlPlacement(s).release_everywhere(inst)
    assert held(db, inst) == {}
    assert usage(db, N1) == (0, 0, 0)
    assert usage(db, N2) == (1, 512, 1)
    assert allocation_violations(db) == []


def test_claim_release_claim_in_one_transaction(db: Database) -> None:
    # The release's UPDATE must keep the node row the claim loaded in step,
    # or the second claim would count the first one's usage twice.
    inst, other = add_instance(db), add_instance(db)
    with db.transaction() as s:
        p = SqlPlacement(s)
        p.claim(inst, N1, SMALL)
        p.release(inst, N1)
        p.claim(other, N1, TINY)
    assert usage(db, N1) == (1, 512, 1)
    assert held(db, inst) == {}
    assert allocation_violations(db) == []


def test_unknown_node(db: Database) -> None:
    with db.transaction() as s, pytest.raises(ComputeHostNotFound):
        SqlPlacement(s).claim("c", NodeRef("nope", "nope"), TINY)
    with db.transaction() as s, pytest.raises(ComputeHostNotFound):
        SqlPlacement(s).move("a", "b", NodeRef("nope", "nope"))
    with db.transaction() as s, pytest.raises(ComputeHostNotFound):
        SqlPlacement(s).lock(N1, NodeRef("nope", "nope"))


# -- quota ---------------------------------------------------------------------
DEFAULTS = {"cores": 4, "ram": 8192, "instances": 3}


def check(db: Database, project: str, *, cores: int, ram: int, instances: int = 0) -> None:
    with db.transaction() as s:
        SqlQuota(s, DEFAULTS).check_deltas(project, cores=cores, ram=ram, instances=instances)


def test_over_quota_uses_novas_message(db: Database) -> None:
    add_instance(db, "p1")  # 2 cores, 4096 MB
    check(db, "p1", cores=2, ram=4096)  # exactly at the limit
    with pytest.raises(OverQuota) as info:
        check(db, "p1", cores=3, ram=0)
    assert info.value.code == 403
    assert info.value.message == (
        "Quota exceeded for cores: Requested 3, but already used 2 of 4 cores"
    )
    with pytest.raises(OverQuota) as info:
        check(db, "p1", cores=4, ram=5000)
    assert info.value.message == (
        "Quota exceeded for cores, ram: Requested 4, 5000, but already used 2, 4096 "
        "of 4, 8192 cores, ram"
    )
    check(db, "p2", cores=4, ram=8192)  # another project's usage does not count


def test_deleted_instances_do_not_count(db: Database) -> None:
    uid = add_instance(db, "p1")
    with pytest.raises(OverQuota):
        check(db, "p1", cores=3, ram=0)
    with db.transaction() as s:
        inst = s.get(Instance, uid)
        assert inst is not None
        inst.deleted = True
    check(db, "p1", cores=3, ram=0)


def test_quota_limit_row_overrides_default(db: Database) -> None:
    add_instance(db, "p1")
    with db.transaction() as s:
        s.add(QuotaLimit(project_id="p1", resource="ram", hard_limit=4096))
        s.add(QuotaLimit(project_id="p1", resource="cores", hard_limit=-1))
    with pytest.raises(OverQuota, match="for ram: Requested 1, but already used 4096 of 4096"):
        check(db, "p1", cores=0, ram=1)
    check(db, "p1", cores=1000, ram=0)  # -1: unlimited
    check(db, "p2", cores=4, ram=8192)  # the override is per project


def test_instances_quota(db: Database) -> None:
    for _ in range(3):
        add_instance(db, "p1", {"id": 1, "vcpus": 0, "memory_mb": 0, "root_gb": 1})
    with pytest.raises(OverQuota, match="for instances"):
        check(db, "p1", cores=0, ram=0, instances=1)


def test_negative_deltas_never_fail(db: Database) -> None:
    big = {"id": 5, "vcpus": 8, "memory_mb": 16384, "root_gb": 160}
    add_instance(db, "p1", big)  # already over every limit
    check(db, "p1", cores=-4, ram=-8192)
    check(db, "p1", cores=0, ram=0, instances=0)
    check(db, "p1", cores=-1, ram=0, instances=-1)
    with pytest.raises(OverQuota):
        check(db, "p1", cores=-1, ram=1)
