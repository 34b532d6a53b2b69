"""The step journal: one row per (migration, step), the durable record of progress.

Statuses: ``pending`` (planned, not started), ``running``, ``retrying`` (failed
transiently, a retry is queued), ``done``, ``failed`` (failed for good) and
``aborted`` (an operator ended the workflow before the step ran).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Connection,
    DateTime,
    String,
    and_,
    bindparam,
    case,
    func,
    literal,
    not_,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from resizeflow.db import api as db
from resizeflow.db.models import Migration, StepJournal, utcnow

PENDING, RUNNING, RETRYING, DONE, FAILED = "pending", "running", "retrying", "done", "failed"
ABORTED = "aborted"


@dataclass(frozen=True)
class PlannedStep:
    step: str
    host: str


def event_name(step: str) -> str:
    """The instance action event that records ``step``, named as Nova's are."""
    return "compute_" + step.rsplit(".", 1)[1]


def plan(
    session: Session,
    migration_id: int,
    request_id: str,
    flow: str,
    steps: Sequence[PlannedStep],
    action_id: int | None = None,
) -> None:
    """Write the pending rows of a workflow, in the transaction that starts it."""
    now = utcnow()
    for position, planned in enumerate(steps):
        session.add(
            StepJournal(
                migration_id=migration_id,
                request_id=request_id,
                action_id=action_id,
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


@dataclass(frozen=True)
class Claim:
    """What a delivery found: the step's status after the claim, and its request."""

    status: str
    request_id: str
    instance_uuid: str | None


@functools.cache
def _claim_statement() -> Any:
    # Built once: constructing this statement costs more CPU than running it.
    j = StepJournal
    now = bindparam("b_now", type_=DateTime())
    worker = bindparam("b_worker", type_=String())
    node_prefix = bindparam("b_node_prefix", type_=String())
    not_superseded = or_(
        j.worker.is_(None),
        func.substr(j.worker, 1, func.length(node_prefix)) != node_prefix,
        j.worker == worker,
    )
    live = and_(
        j.status == RUNNING,
        j.lease_expires_at.is_not(None),
        j.lease_expires_at > now,
        not_superseded,
    )
    # Fixed parameters, not an expanding IN list, which is re-rendered on every run.
    takeable = [literal(status, String()) for status in (PENDING, RETRYING, RUNNING)]
    takes = and_(j.status.in_(takeable), not_(live))

    def when_taken(value: object, otherwise: object) -> object:
        return case((takes, value), else_=otherwise)

    return (
        update(j)
        .where(j.migration_id == bindparam("b_migration_id"), j.step == bindparam("b_step"))
        .values(
            deliveries=j.deliveries + 1,
            status=when_taken(RUNNING, j.status),
            attempts=j.attempts + when_taken(1, 0),
            worker=when_taken(worker, j.worker),
            started_at=when_taken(func.coalesce(j.started_at, now), j.started_at),
            heartbeat_at=when_taken(now, j.heartbeat_at),
            lease_expires_at=when_taken(
                bindparam("b_lease_until", type_=DateTime()), j.lease_expires_at
            ),
        )
        .returning(
            j.status,
            j.request_id,
            select(Migration.instance_uuid).where(Migration.id == j.migration_id).scalar_subquery(),
        )
    )


def claim(
    conn: Connection, migration_id: int, step: str, worker: str, lease: float
) -> Claim | None:
    """Count a delivery and mark the step running under ``worker``, in one statement.

    The step is taken unless it is done, failed or aborted, or running under
    a live lease of another copy that is not an earlier process of this same
    worker (see :func:`superseded`). Every delivery is counted, duplicates
    included. Returns None when the step has no journal row.

    NOTE: this is a single ``UPDATE ... RETURNING`` on purpose. It runs before
    the step's own transaction and commits on its own, so that an attempt is
    on record even if the worker dies mid-step, and it costs one round trip.
    The SET expressions all read the row as it was before the update.
    """
    now = utcnow()
    row = conn.execute(
        _claim_statement(),
        {
            "b_migration_id": migration_id,
            "b_step": step,
            "b_now": now,
            "b_worker": worker,
            "b_node_prefix": worker.rpartition("/")[0] + "/",
            "b_lease_until": now + dt.timedelta(seconds=lease),
        },
    ).one_or_none()
    return None if row is None else Claim(*row)


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


@functools.cache
def _finish_statement(dialect: str, event: bool, ends_action: bool) -> Any:
    """The journal row's ``done``, on PostgreSQL joined with the step's writes to
    its action (the event, and the action's end) as CTEs of one statement."""
    table = StepJournal.metadata.tables[StepJournal.__tablename__]
    done = (
        update(table)
        .where(table.c.id == bindparam("b_id"))
        .values(
            status=DONE,
            applied=table.c.applied + 1,
            finished_at=bindparam("b_now"),
            last_error=None,
            lease_expires_at=None,
        )
    )
    if not event or dialect != "postgresql":
        return done
    ctes = [done.cte("step_done")]
    if ends_action:
        ctes.append(db.finish_action_statement(False).cte("action_done"))
    return db.event_upsert(dialect).add_cte(*ctes)


def finish(session: Session, row: StepJournal, *, host: str, ends_action: bool) -> None:
    """Mark the step done and write its action event; the flow's last step ends the action.

    On PostgreSQL that is one statement, and one round trip, for every step.
    SQLite has no data-modifying CTEs and runs the same writes one by one.
    The ORM's copy of ``row`` is brought up to date without being flushed again.
    """
    now = utcnow()
    dialect = session.get_bind().dialect.name
    event = row.action_id is not None
    params: dict[str, Any] = {"b_id": row.id, "b_now": now}
    if row.action_id is not None:
        params.update(
            db.event_params(
                row.action_id,
                event_name(row.step),
                host=host,
                start=row.started_at,
                result="Success",
                now=now,
            )
        )
    session.execute(_finish_statement(dialect, event, ends_action), params)
    if dialect != "postgresql" and row.action_id is not None:
        session.execute(db.event_upsert(dialect), params)
        if ends_action:
            session.execute(db.finish_action_statement(False), params)
    for key, value in (
        ("status", DONE),
        ("applied", row.applied + 1),
        ("finished_at", now),
        ("last_error", None),
        ("lease_expires_at", None),
    ):
        set_committed_value(row, key, value)


def fail(row: StepJournal, error: str, *, final: bool) -> None:
    row.status = FAILED if final else RETRYING
    row.last_error = error[-4000:]
    row.lease_expires_at = None
    row.heartbeat_at = utcnow()
    if final:
        row.finished_at = utcnow()
