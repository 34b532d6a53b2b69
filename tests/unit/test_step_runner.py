"""The hypervisor phase of the step runner on a real SQLite journal: the lease is
renewed while the work runs, renewal is fenced, and the step timeout bounds the work."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import update

from resizeflow import errors, flows
from resizeflow.conf import Settings
from resizeflow.db import journal
from resizeflow.db.migrate import upgrade
from resizeflow.db.models import StepJournal, utcnow
from resizeflow.db.session import Database
from resizeflow.runner import phases
from resizeflow.runner.delivery import Delivery
from resizeflow.states import JournalStatus
from resizeflow.steps.context import HostRuntime, HypervisorWork
from tests.support.stack import wait_for

pytestmark = pytest.mark.fast

WORKER = "compute-1@here/100"
TOKEN = "d1e2c3b4a5968778695a4b3c2d1e0f00"  # this delivery's own
STOP = flows.STOP.last
UUID = "0e0e0e0e-0000-4000-8000-000000000001"


def claimant(holder: str) -> journal.Claimant:
    return journal.Claimant(flows.Subject.INSTANCE, UUID, STOP.task, WORKER, holder, 0.3)


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[HostRuntime]:
    settings = Settings(state_dir=tmp_path, host="compute-1", step_lease=0.3, step_timeout=5.0)
    database = Database(settings.db_url)
    upgrade(database)
    rt = HostRuntime(settings=settings, db=database, virt=None, notifier=None, incarnation=WORKER)  # type: ignore[arg-type]
    yield rt
    database.dispose()


def running_row(rt: HostRuntime) -> int:
    with rt.db.transaction() as s:
        journal.plan(
            s,
            "stop",
            [journal.PlannedStep(STOP.task, "compute-1")],
            instance_uuid=UUID,
            request_id="req-1",
        )
    with rt.db.autocommit() as conn:
        claim = journal.claim(conn, claimant(TOKEN))
    assert claim is not None and claim.status == JournalStatus.RUNNING and claim.taken
    return claim.row_id


def row(rt: HostRuntime, row_id: int) -> StepJournal:
    with rt.db.snapshot() as s:
        found = journal.get(s, row_id)
        assert found is not None
        return found


def phase(rt: HostRuntime, row_id: int, work: HypervisorWork) -> Any:
    """The hypervisor phase of the delivery that holds journal row ``row_id``."""
    delivery = Delivery(cast(Any, None), flows.STOP, STOP, UUID, runtime=rt)
    delivery.holder, delivery.row_id = TOKEN, row_id
    delivery.claim = journal.Claim(row_id, JournalStatus.RUNNING, "req-1", UUID, taken=True)
    return phases.run_unlocked(delivery, work)


def test_the_lease_is_renewed_while_the_work_runs(runtime: HostRuntime) -> None:
    row_id = running_row(runtime)
    leases: list[Any] = []
    read_at: list[Any] = []

    def work(deadline: float) -> str:
        for _ in range(6):
            time.sleep(0.2)
            read_at.append(utcnow())
            leases.append(row(runtime, row_id).lease_expires_at)
        return "copied"

    assert phase(runtime, row_id, HypervisorWork("copy", work)) == "copied"
    # 1.2 s of work under a 0.3 s lease: it never lapsed, it kept moving on.
    assert all(lease > at for at, lease in zip(read_at, leases, strict=True)), (read_at, leases)
    assert len(set(leases)) >= 3
    assert sorted(leases) == leases


def test_renewal_stops_once_another_copy_took_the_step_over(runtime: HostRuntime) -> None:
    row_id = running_row(runtime)

    def renewer() -> threading.Thread | None:
        return next((t for t in threading.enumerate() if t.name == f"lease-{row_id}"), None)

    def work(deadline: float) -> None:
        with runtime.db.transaction() as s:
            s.execute(update(StepJournal).where(StepJournal.id == row_id).values(holder="another"))
        taken = row(runtime, row_id).lease_expires_at
        # The renewer finds the step taken over and stops, while the work still runs
        # (every 0.1 s, under a 0.3 s lease, it would otherwise go on until the work ends).
        wait_for(lambda: renewer() is None, 30, "the lease renewer to stop")
        # The fenced renewal left the other copy's lease alone.
        assert row(runtime, row_id).lease_expires_at == taken

    assert renewer() is None
    phase(runtime, row_id, HypervisorWork("copy", work))


def test_work_past_the_step_timeout_fails_transiently(runtime: HostRuntime) -> None:
    row_id = running_row(runtime)
    rt = dataclasses.replace(
        runtime, settings=dataclasses.replace(runtime.settings, step_timeout=0.5)
    )
    told: list[tuple[float, float]] = []

    def work(deadline: float) -> None:
        told.append((deadline, time.monotonic()))
        time.sleep(0.8)

    asked = time.monotonic()
    with pytest.raises(errors.TransientError, match="past the step timeout"):
        phase(rt, row_id, HypervisorWork("copy the disk", work))
    # The work was told when to stop: the step timeout from the phase's start,
    # which came after the phase was asked for and before the work began.
    [(deadline, began)] = told
    assert asked + 0.5 <= deadline <= began + 0.5


def test_a_second_delivery_in_the_same_process_does_not_take_a_held_step(
    runtime: HostRuntime,
) -> None:
    """Two copies in one worker share its name; only the token tells them apart."""
    row_id = running_row(runtime)

    def claim_again() -> journal.Claim | None:
        with runtime.db.autocommit() as conn:
            return journal.claim(conn, claimant("second"))

    second = claim_again()
    assert second is not None
    assert (second.row_id, second.status, second.taken) == (row_id, JournalStatus.RUNNING, False)
    assert journal.holds(row(runtime, row_id), TOKEN)
    time.sleep(0.4)  # the holder's 0.3 s lease lapses: its copy is presumed dead
    third = claim_again()
    assert third is not None and third.taken
    assert not journal.holds(row(runtime, row_id), TOKEN)
