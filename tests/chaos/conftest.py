"""The chaos tier's seed: every scenario's random choices come from one seeded
generator, and a failed scenario says which seed to replay it with.

``RESIZEFLOW_CHAOS_SEED`` fixes the seed; otherwise each scenario draws one.
Faults strike at moments chosen by that generator, but what is in flight at a
given moment also depends on timing, so a replay strikes the same way, at the
same points of the workload, not necessarily the same steps.
"""

from __future__ import annotations

import os
import random
from collections.abc import Generator
from typing import Any

import pytest

SEED = "RESIZEFLOW_CHAOS_SEED"


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    chosen = (
        int(os.environ[SEED]) if os.environ.get(SEED) else random.SystemRandom().randrange(2**32)
    )
    request.node.user_properties.append(("chaos seed", chosen))
    return chosen


@pytest.fixture
def rng(seed: int) -> random.Random:
    return random.Random(seed)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, Any]:
    report = yield
    if report.failed:
        for name, value in item.user_properties:
            if name == "chaos seed":
                report.sections.append(
                    ("chaos seed", f"replay with {SEED}={value} (test {item.nodeid})")
                )
    return report
