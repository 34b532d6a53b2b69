"""A flavor's swap is claimed as local disk, as Nova's scheduler counts it.

Nova's ``resources_from_flavor`` asks placement for DISK_GB = root_gb +
ephemeral_gb + swap (MB, rounded up to whole GB) for a server that is not
volume-backed, which resizeflow's never are. These tests hold the claims of
boot, resize, confirm and revert to that, with the allocation invariant (a
node's usage is the sum of its allocations) after every workflow.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from resizeflow.compute.flavors import FlavorAdmin
from resizeflow.openstack.base import Resources
from resizeflow.states import MigrationStatus, VmState
from tests.invariants import allocation_violations
from tests.stack import Stack
from tests.test_flows import allocations


def novas_disk_gb(flavor: dict[str, Any]) -> int:
    """DISK_GB as Nova's scheduler utils compute it for an image-backed server."""
    swap_mb = flavor["swap"] or 0
    return flavor["ephemeral_gb"] + math.ceil(swap_mb / 1024) + flavor["root_gb"]


@pytest.mark.fast
@pytest.mark.parametrize(
    ("root_gb", "ephemeral_gb", "swap", "disk_gb"),
    [
        (1, 0, 0, 1),
        (1, 0, 1, 2),  # one MB of swap takes a whole GB
        (1, 0, 1024, 2),
        (1, 0, 1025, 3),
        (20, 5, 2048, 27),
        (0, 0, 512, 1),
        (10, 0, "", 10),  # Nova's API showed no swap as "" before 2.75
    ],
)
def test_a_flavors_disk_claim_counts_swap_as_nova_does(
    root_gb: int, ephemeral_gb: int, swap: int | str, disk_gb: int
) -> None:
    flavor = {
        "vcpus": 2,
        "memory_mb": 1024,
        "root_gb": root_gb,
        "ephemeral_gb": ephemeral_gb,
        "swap": swap,
    }
    assert novas_disk_gb(flavor) == disk_gb
    assert Resources.of_flavor(flavor) == Resources(vcpus=2, memory_mb=1024, disk_gb=disk_gb)


def _flavor(rf: Stack, name: str, *, ram: int, disk: int, ephemeral: int, swap: int) -> str:
    made = FlavorAdmin(rf.db).create(
        rf.admin(), name=name, ram=ram, vcpus=1, disk=disk, ephemeral=ephemeral, swap=swap
    )
    return made.flavorid


def test_boot_resize_confirm_revert_claim_swap(rf: Stack, project: str) -> None:
    if rf.broker != "redis":
        pytest.skip("claims do not depend on the broker: checked on both databases with Redis")
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
