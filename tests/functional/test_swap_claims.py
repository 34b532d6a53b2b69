"""A flavor's swap is claimed as local disk, as Nova's scheduler counts it.

Nova's ``resources_from_flavor`` asks placement for DISK_GB = root_gb +
ephemeral_gb + swap (MB, rounded up to whole GB) for a server that is not
volume-backed, which resizeflow's never are. These tests hold the claims of
boot, resize, confirm and revert to that, with the allocation invariant (a
node's usage is the sum of its allocations) after every workflow.
"""

from __future__ import annotations

import pytest

from resizeflow.compute.flavors import FlavorAdmin
from resizeflow.states import MigrationStatus, VmState
from tests.functional.test_flows import allocations
from tests.support.invariants import allocation_violations
from tests.support.stack import Stack


def _flavor(rf: Stack, name: str, *, ram: int, disk: int, ephemeral: int, swap: int) -> str:
    made = FlavorAdmin(rf.db).create(
        rf.admin(), name=name, ram=ram, vcpus=1, disk=disk, ephemeral=ephemeral, swap=swap
    )
    return made.flavorid


# Claims do not depend on the broker: checked on both databases with Redis.
@pytest.mark.stacks("sqlite-redis", "postgresql-redis")
def test_boot_resize_confirm_revert_claim_swap(rf: Stack, project: str) -> None:
    ctx = rf.ctx(project)
    # DISK_GB: 1 + 0 + 1 (512 MB of swap), 2 + 1 + 2 (1536 MB), 3 + 1 + 4 (4096 MB).
    small = _flavor(rf, f"{project}.swap-s", ram=512, disk=1, ephemeral=0, swap=512)
    medium = _flavor(rf, f"{project}.swap-m", ram=1024, disk=2, ephemeral=1, swap=1536)
    large = _flavor(rf, f"{project}.swap-l", ram=2048, disk=3, ephemeral=1, swap=4096)

    uuid = rf.boot(project, flavor=small)
    source = rf.instance(uuid).host
    assert source is not None
    assert allocations(rf, uuid) == {source: {"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 2}}
    assert allocation_violations(rf.db) == []

    # Resize: the migration keeps the old flavor's claim on the source, the
    # instance claims the new one on the dest; confirm frees the source's.
    mig_id = rf.api.resize(ctx, uuid, medium)
    rf.wait_migration(mig_id, MigrationStatus.FINISHED)
    dest = rf.wait_instance(uuid, VmState.RESIZED).host
    assert dest is not None and dest != source
    mig = rf.migration(mig_id)
    assert allocations(rf, mig.uuid) == {source: {"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 2}}
    assert allocations(rf, uuid) == {dest: {"VCPU": 1, "MEMORY_MB": 1024, "DISK_GB": 5}}
    assert allocation_violations(rf.db) == []
    rf.api.confirm_resize(ctx, uuid)
    rf.wait_migration(mig_id, MigrationStatus.CONFIRMED)
    rf.wait_instance(uuid, VmState.ACTIVE)
    assert allocations(rf, mig.uuid) == {}
    assert allocations(rf, uuid) == {dest: {"VCPU": 1, "MEMORY_MB": 1024, "DISK_GB": 5}}
    assert allocation_violations(rf.db) == []

    # Resize again and revert: the instance ends with its medium claim where it was.
    mig_id = rf.api.resize(ctx, uuid, large)
    rf.wait_migration(mig_id, MigrationStatus.FINISHED)
    other = rf.wait_instance(uuid, VmState.RESIZED).host
    assert other is not None and other != dest
    mig = rf.migration(mig_id)
    assert allocations(rf, mig.uuid) == {dest: {"VCPU": 1, "MEMORY_MB": 1024, "DISK_GB": 5}}
    assert allocations(rf, uuid) == {other: {"VCPU": 1, "MEMORY_MB": 2048, "DISK_GB": 8}}
    assert allocation_violations(rf.db) == []
    rf.api.revert_resize(ctx, uuid)
    rf.wait_migration(mig_id, MigrationStatus.REVERTED)
    inst = rf.wait_instance(uuid, VmState.ACTIVE)
    assert (inst.host, inst.flavor["flavorid"]) == (dest, medium)
    assert allocations(rf, mig.uuid) == {}
    assert allocations(rf, uuid) == {dest: {"VCPU": 1, "MEMORY_MB": 1024, "DISK_GB": 5}}
    assert allocation_violations(rf.db) == []
