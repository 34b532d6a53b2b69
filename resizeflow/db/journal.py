"""The step journal: one row per planned step, the durable record of progress.

A migration's flows key their rows by (migration, step); an instance
operation's one row is keyed by its instance and has no migration. Statuses
are :class:`~resizeflow.states.JournalStatus`, and every change of one goes
through :func:`~resizeflow.states.check_journal` or, in the claim and finish
statements, through the statuses the transition table allows. Rows are never
deleted.
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
    update,
)
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from resizeflow import flows
from resizeflow.db import api as dbapi
from resizeflow.db.models import StepJournal, utcnow
from resizeflow.states import JOURNAL_CLAIMABLE, JournalStatus, check_journal

_J = JournalStatus


@dataclass(frozen=True)
class PlannedStep:
    step: str
    host: str


def plan(
    session: Session,
    flow: str,
    steps: Sequence[PlannedStep],
    *,
    instance_uuid: str,
    request_id: str,
    migration_id: int | None = None,
    action_id: int | None = None,
) -> None:
    """Write the pending rows of a workflow, in the transaction that starts it."""
    now = utcnow()
    for position, planned in enumerate(steps):
        session.add(
            StepJournal(
                migration_id=migration_id,
                instance_uuid=instance_uuid,
                request_id=request_id,
                action_id=action_id,
                flow=flow,
                step=planned.step,
                position=position,
                host=planned.host,
                status=_J.PENDING,
                enqueued_at=now,
            )
        )


def get(session: Session, row_id: int, *, lock: bool = False) -> StepJournal | None:
    return session.get(StepJournal, row_id, with_for_update=lock)


def live(
    session: Session, migration_id: int, step: str, *, lock: bool = False
) -> StepJournal | None:
    """A migration's live row of ``step``: the one not superseded."""
    stmt = select(StepJournal).where(
        StepJournal.migration_id == migration_id,
        StepJournal.step == step,
        StepJournal.status != _J.SUPERSEDED,
    )
    return session.scalars(stmt.with_for_update() if lock else stmt).one_or_none()


def open_operations(session: Session, instance_uuid: str) -> list[StepJournal]:
    """The instance's operations (stop, start, ...) planned and not ended, locked."""
    return list(
        session.scalars(
            select(StepJournal)
            .where(
                StepJournal.instance_uuid == instance_uuid,
                StepJournal.migration_id.is_(None),
                StepJournal.status.in_(sorted(JOURNAL_CLAIMABLE)),
            )
            .with_for_update()
        )
    )


def rows(session: Session, migration_id: int) -> list[StepJournal]:
    """A migration's live rows (not superseded), in flow and step order."""
    return list(
        session.scalars(
            select(StepJournal)
            .where(StepJournal.migration_id == migration_id, StepJournal.status != _J.SUPERSEDED)
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
class Claimant:
    """One delivery of a step, as the journal knows it: which step, of what, by whom.

    ``key`` is the task's argument: a migration id, or an instance uuid.
    ``worker`` is the worker's incarnation (see :func:`superseded`), ``lease``
    how long a claim holds without renewal, in seconds. ``holder`` is the
    delivery's own token: two copies of a step in one worker process share its
    name, and only the token tells them apart. The copy that holds the row is
    the one allowed to commit the step.
    """

    subject: flows.Subject
    key: int | str
    step: str
    worker: str
    holder: str
    lease: float


@dataclass(frozen=True)
class Claim:
    """What a delivery found: the step's row and status after the claim, and its request."""

    row_id: int
    status: JournalStatus
    request_id: str
    instance_uuid: str
    # Whether this delivery took the step; if not, a live copy holds it.
    taken: bool

    @classmethod
    def of(cls, row: Any, holder: str) -> Claim | None:
        """The claim a row returned by :func:`claim_statement` stands for; None: no row."""
        return None if row is None else cls(row[0], _J(row[1]), row[2], row[3], row[4] == holder)


def row_of(subject: flows.Subject) -> Any:
    """The id of the row a delivery is for: the migration's live row of the step,
    or the instance's newest row of the operation (a redelivery of an earlier
    one then finds it ended)."""
    j = StepJournal.__table__.alias("planned")
    where = [j.c.step == bindparam("b_step")]
    if subject is flows.Subject.MIGRATION:
        where += [j.c.migration_id == bindparam("b_key"), j.c.status != _J.SUPERSEDED.value]
    else:
        where += [j.c.instance_uuid == bindparam("b_key"), j.c.migration_id.is_(None)]
    return select(func.max(j.c.id)).where(*where).scalar_subquery()


@functools.cache
def claim_statement(subject: flows.Subject) -> Any:
    """The claim (see :func:`claim`) as one ``UPDATE ... RETURNING``, bound by
    :func:`claim_params`; its row is read with :meth:`Claim.of`."""
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
        j.status == _J.RUNNING,
        j.lease_expires_at.is_not(None),
        j.lease_expires_at > now,
        not_superseded,
    )
    # Fixed parameters, not an expanding IN list, which is re-rendered on every run.
    takeable = [literal(status.value, String()) for status in sorted(JOURNAL_CLAIMABLE)]
    takes = and_(j.status.in_(takeable), not_(live))

    def when_taken(value: object, otherwise: object) -> object:
        return case((takes, value), else_=otherwise)

    return (
        update(j)
        .where(j.id == row_of(subject))
        .values(
            deliveries=j.deliveries + 1,
            status=when_taken(_J.RUNNING.value, j.status),
            attempts=j.attempts + when_taken(1, 0),
            worker=when_taken(worker, j.worker),
            holder=when_taken(bindparam("b_holder", type_=String()), j.holder),
            started_at=when_taken(func.coalesce(j.started_at, now), j.started_at),
            heartbeat_at=when_taken(now, j.heartbeat_at),
            lease_expires_at=when_taken(
                bindparam("b_lease_until", type_=DateTime()), j.lease_expires_at
            ),
        )
        .returning(j.id, j.status, j.request_id, j.instance_uuid, j.holder)
    )


def claim_params(who: Claimant) -> dict[str, Any]:
    now = utcnow()
    return {
        "b_key": who.key,
        "b_step": who.step,
        "b_now": now,
        "b_worker": who.worker,
        "b_holder": who.holder,
        "b_node_prefix": who.worker.rpartition("/")[0] + "/",
        "b_lease_until": now + dt.timedelta(seconds=who.lease),
    }


def claim(conn: Connection, who: Claimant) -> Claim | None:
    """Count a delivery and mark the step running under its worker, in one statement.

    The step is taken when its status may go to running (see
    :data:`~resizeflow.states.JOURNAL_CLAIMABLE`), unless it runs under a live
    lease of another copy that is not an earlier process of this same worker
    (see :func:`superseded`). Every delivery is counted, duplicates included.
    Returns None when the step has no journal row.

    NOTE: this is a single ``UPDATE ... RETURNING`` on purpose. It runs before
    the step's own transaction and commits on its own, so that an attempt is
    on record even if the worker dies mid-step, and it costs one round trip.
    The SET expressions all read the row as it was before the update.
    """
    row = conn.execute(claim_statement(who.subject), claim_params(who)).one_or_none()
    return Claim.of(row, who.holder)


def held_by(conn: Connection, who: Claimant) -> int | None:
    """The row of the delivery's step, if the delivery (its ``holder`` token) took it."""
    found: int | None = conn.scalar(
        select(StepJournal.id).where(
            StepJournal.id == row_of(who.subject), StepJournal.holder == who.holder
        ),
        {"b_key": who.key, "b_step": who.step},
    )
    return found


def renew_leases(session: Session, worker: str, running: Collection[int], lease: float) -> int:
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
            StepJournal.status == _J.RUNNING,
            StepJournal.id.in_(sorted(running)),
        )
        .values(heartbeat_at=now, lease_expires_at=now + dt.timedelta(seconds=lease))
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def renew_lease(conn: Connection, row_id: int, holder: str, lease: float) -> bool:
    """Extend one running step's lease, fenced: False once another copy has taken
    the step over (or it ended), and then this copy must commit nothing."""
    now = utcnow()
    result = conn.execute(
        update(StepJournal)
        .where(
            StepJournal.id == row_id,
            StepJournal.holder == holder,
            StepJournal.status == _J.RUNNING,
        )
        .values(heartbeat_at=now, lease_expires_at=now + dt.timedelta(seconds=lease))
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)


def holds(row: StepJournal, holder: str) -> bool:
    """Whether the copy with token ``holder`` still holds the running step."""
    return row.status == _J.RUNNING and row.holder == holder


@functools.cache
def done_statement() -> Any:
    """The journal row's ``done``, bound by :attr:`Finish.params`."""
    table = StepJournal.metadata.tables[StepJournal.__tablename__]
    return (
        update(table)
        .where(table.c.id == bindparam("b_id"))
        .values(
            status=_J.DONE.value,
            applied=table.c.applied + 1,
            finished_at=bindparam("b_now"),
            last_error=None,
            lease_expires_at=None,
        )
    )


@dataclass(frozen=True)
class Finish:
    """The writes that mark a step done, for a store to send (see
    :meth:`resizeflow.runner.stores.JournalStore.finish`).

    Its journal row's ``done`` (:func:`done_statement`); for a row of an
    action, the action event of the Nova method the step is part of
    (:func:`~resizeflow.db.api.event_upsert`), which succeeds with the
    method's last step and stays in progress until then; and, for the flow's
    last step, the end of the action
    (:func:`~resizeflow.db.api.finish_action_statement`). ``params`` binds
    all three.
    """

    row: StepJournal
    params: dict[str, Any]
    event: bool
    ends_action: bool
    now: dt.datetime

    def written(self) -> None:
        """The ORM's copy of the row brought up to date, without being flushed again."""
        row = self.row
        for key, value in (
            ("status", _J.DONE),
            ("applied", row.applied + 1),
            ("finished_at", self.now),
            ("last_error", None),
            ("lease_expires_at", None),
        ):
            set_committed_value(row, key, value)


def finishing(row: StepJournal, *, host: str, ends_action: bool) -> Finish:
    """What marks ``row``'s step done on ``host``; the flow's last step ends the action."""
    check_journal(row.status, _J.DONE)
    now = utcnow()
    params: dict[str, Any] = {"b_id": row.id, "b_now": now}
    if row.action_id is not None:
        flow, step = flows.STEPS[row.step]
        # A step that is not the last of its Nova method leaves the method's
        # event in progress; the event keeps the start of its first step.
        params.update(
            dbapi.event_params(
                row.action_id,
                step.event,
                host=host,
                start=row.started_at,
                result="Success" if flow.ends_event(step) else None,
                now=now,
            )
        )
    return Finish(
        row, params, row.action_id is not None, ends_action and row.action_id is not None, now
    )


def fail(row: StepJournal, error: str, *, final: bool) -> None:
    row.status = check_journal(row.status, _J.FAILED if final else _J.RETRYING)
    row.last_error = error[-4000:]
    row.lease_expires_at = None
    row.heartbeat_at = utcnow()
    if final:
        row.finished_at = utcnow()


def end(row: StepJournal, status: JournalStatus, reason: str | None = None) -> None:
    """Close a step that will not run (aborted) or hand its flow back (superseded)."""
    row.status = check_journal(row.status, status)
    row.lease_expires_at = None
    if reason is not None:
        row.last_error = reason
    row.finished_at = row.finished_at or utcnow()
