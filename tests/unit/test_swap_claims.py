"""A flavor's swap is claimed as local disk, as Nova's scheduler counts it: DISK_GB =
root_gb + ephemeral_gb + swap (MB, rounded up to whole GB), as Nova's
``resources_from_flavor`` asks placement for it. The claims of real workflows are
held to it in tests/functional/test_swap_claims.py.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from resizeflow.openstack.base import Resources


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
