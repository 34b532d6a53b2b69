"""The step journal: one row per (migration, step), the durable record of progress.

Statuses: ``pending`` (planned, not started), ``running``, ``retrying`` (failed
transiently, a retry is queued), ``done``, ``failed`` (failed for good) and
``aborted`` (an operator ended the workflow before the step ran).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from sqlalchemy import select, tuple_, update
from sqlalchemy.orm import Session

from resizeflow.db.models import StepJournal, utcnow

PENDING, RUNNING, RETRYING, DONE, FAILED = "pending", "running", "retrying", "done", "failed"
ABORTED = "aborted"


@dataclass(frozen=True)
class PlannedStep:
    step: str
    host: str


def plan(
    session: Session, migration_id: int, request_id: str, flow: str, steps: Sequence[PlannedStep]
) -> None:
    """Write the pending rows of a workflow, in the transaction that starts it."""
    now = utcnow()
    for position, planned in enumerate(steps):
        session.add(
            StepJournal(
                migration_id=migration_id,
                request_id=request_id,
                flow=flow,
                step=planned.step,
                position=position,
                host=planned.host,
                status=PENDING,
                enqueued_at=now,
            )
        )


def get(
    session: Session, migration_id: int, step: str, *, lock: bool = False
) -> StepJournal | None:
    stmt = select(StepJournal).where(
        StepJournal.migration_id == migration_id, StepJournal.step == step
    )
    if lock:
        stmt = stmt.with_for_update()
    return session.scalars(stmt).one_or_none()


def rows(session: Session, migration_id: int) -> list[StepJournal]:
    return list(
        session.scalars(
            select(StepJournal)
            .where(StepJournal.migration_id == migration_id)
            .order_by(StepJournal.flow, StepJournal.position)
        )
    )


def superseded(row: StepJournal, incarnation: str) -> bool:
    """Whether ``row`` was running under an earlier process of the same worker.

    A worker's incarnation is ``<celery node name>/<pid>``: a restarted worker
    keeps its node name, so a step its previous process was running is dead.
    """
    if row.worker is None:
        return False
    node, _, _pid = row.worker.rpartition("/")
    return node == incarnation.rpartition("/")[0] and row.worker != incarnation


def lease_live(row: StepJournal, now: dt.datetime | None = None) -> bool:
    """Whether a running step's worker has renewed its lease recently enough."""
    return row.lease_expires_at is not None and row.lease_expires_at > (now or utcnow())


def begin(row: StepJournal, worker: str, lease: float) -> None:
    now = utcnow()
    row.status = RUNNING
    row.attempts += 1
    row.worker = worker
    row.started_at = row.started_at or now
    row.heartbeat_at = now
    row.lease_expires_at = now + dt.timedelta(seconds=lease)


def renew_leases(
    session: Session, worker: str, running: Collection[tuple[int, str]], lease: float
) -> int:
    """Extend the leases of the steps ``worker`` is executing right now; returns how many.

    Only steps still executing in the process are renewed: a step whose task
    died inside a live worker must let its lease lapse, or nobody would ever
    re-drive it.
    """
    if not running:
        return 0
    now = utcnow()
    result = session.execute(
        update(StepJournal)
        .where(
            StepJournal.worker == worker,
            StepJournal.status == RUNNING,
            tuple_(StepJournal.migration_id, StepJournal.step).in_(sorted(running)),
        )
        .values(heartbeat_at=now, lease_expires_at=now + dt.timedelta(seconds=lease))
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def finish(row: StepJournal) -> None:
    row.status = DONE
    row.finished_at = utcnow()
    row.last_error = None
    row.lease_expires_at = None


def fail(row: StepJournal, error: str, *, final: bool) -> None:
    row.status = FAILED if final else RETRYING
    row.last_error = error[-4000:]
    row.lease_expires_at = None
    row.heartbeat_at = utcnow()
    if final:
        row.finished_at = utcnow()
