"""The model-based run (tests/support/model.py): every operation under faults.

``make test`` runs a short one on each broker, on PostgreSQL (whose restart is
one of the faults); ``make soak`` a long one. RESIZEFLOW_SOAK_SEED replays a
run's choices; RESIZEFLOW_SOAK_OPERATIONS, _SERVERS and _MINUTES size it.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.chaos import ChaosStack
from tests.support.model import ModelRun
from tests.support.stack import RABBITMQ_URL, REDIS_URL, require

OPERATIONS = int(os.environ.get("RESIZEFLOW_SOAK_OPERATIONS", "60"))
SERVERS = int(os.environ.get("RESIZEFLOW_SOAK_SERVERS", "5"))
MINUTES = float(os.environ.get("RESIZEFLOW_SOAK_MINUTES", "0")) or None
SUMMARY = os.environ.get("RESIZEFLOW_SOAK_SUMMARY")


@pytest.fixture(params=["redis", "rabbitmq"])
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ChaosStack]:
    if request.param == "redis":
        require(REDIS_URL, 6379, "Redis")
    else:
        require(RABBITMQ_URL, 5672, "RabbitMQ")
    if os.geteuid() != 0 and not os.environ.get("CI"):
        pytest.skip("the private PostgreSQL cluster is started with runuser, as root")
    chaos = ChaosStack(tmp_path, request.param, None, "postgresql")
    try:
        chaos.start()
        yield chaos
    finally:
        chaos.stop()


def test_every_operation_under_faults(stack: ChaosStack) -> None:
    seed = (
        int(os.environ["RESIZEFLOW_SOAK_SEED"])
        if os.environ.get("RESIZEFLOW_SOAK_SEED")
        else random.SystemRandom().randrange(2**32)
    )
    run = ModelRun(stack, seed, OPERATIONS, SERVERS, deadline=MINUTES * 60 if MINUTES else None)
    figures = run.run()
    line = f"{stack.name}: {figures.summary()}"
    print(line)
    if SUMMARY:
        with Path(SUMMARY).open("a") as fh:
            fh.write(line + "\n")
    assert not figures.violations, run.failure_report()
    # The run did what it says: operations accepted and refused, and faults struck.
    # (A run bounded by minutes makes fewer operations than it may.)
    assert sum(figures.accepted.values()) > sum(figures.operations.values()) // 4, figures.summary()
    assert sum(figures.faults.values()) > 0, figures.summary()
