"""The step journal: one row per (migration, step), the durable record of progress.

Statuses: ``pending`` (planned, not started), ``running``, ``retrying`` (failed
transiently, a retry is queued), ``done`` and ``failed`` (failed for good).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from resizeflow.db.models import StepJournal, utcnow

PENDING, RUNNING, RETRYING, DONE, FAILED = "pending", "running", "retrying", "done", "failed"


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


def begin(session: Session, row: StepJournal, worker: str) -> None:
    now = utcnow()
    row.status = RUNNING
    row.attempts += 1
    row.worker = worker
    row.started_at = row.started_at or now
    row.heartbeat_at = now


def finish(row: StepJournal) -> None:
    row.status = DONE
    row.finished_at = utcnow()
    row.last_error = None


def fail(row: StepJournal, error: str, *, final: bool) -> None:
    row.status = FAILED if final else RETRYING
    row.last_error = error[-4000:]
    if final:
        row.finished_at = utcnow()
