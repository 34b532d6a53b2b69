"""Re-driving workflows from the step journal: the reconciler and worker-start recovery.

A workflow is stalled when its first step that is not done

- is ``pending`` and has not started within the deadline since it became next
  (the chain message was lost: a broker restarted without persistence, or a
  chain link was dropped);
- is ``running`` and its lease has lapsed (its worker died, e.g. SIGKILL);
- is ``retrying`` and its retry has not arrived within the deadline plus the
  longest backoff (the delayed message was lost).

The reconciler sends the rest of the chain again, from that step, on the
right hosts' queues. It never races a live copy of a step: a running step
with a live lease is left alone, and a duplicate that does arrive waits on the
step's row locks and then finds the step done. Instance operations (spawn,
stop, start, delete) are one-step flows in the same journal and are re-driven
the same way.

After the broker has lost its data (:mod:`resizeflow.brokerloss` finds out),
the deadline is not waited for: every workflow whose next message was sent
before the loss was seen, a ``pending`` or ``retrying`` first step, is
re-driven at once.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from dataclasses import dataclass

from celery import Celery
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from resizeflow import flows, routing
from resizeflow.conf import Settings
from resizeflow.db import journal, services
from resizeflow.db.models import Instance, Migration, StepJournal, utcnow
from resizeflow.db.session import Database
from resizeflow.states import (
    JOURNAL_ENDED,
    JOURNAL_OPEN,
    JournalStatus,
    MigrationStatus,
    TaskState,
)

log = logging.getLogger(__name__)

_J = JournalStatus
_GIVEN_UP = (MigrationStatus.ERROR, MigrationStatus.FAILED)


@dataclass(frozen=True)
class Redrive:
    """A stalled workflow: its subject (migration id or instance uuid) and what to send."""

    subject: int | str
    flow: str
    step: str
    reason: str
    steps: tuple[journal.PlannedStep, ...]
    row_id: int

    @property
    def migration_id(self) -> int | None:
        return self.subject if isinstance(self.subject, int) else None


def _stall_reason(
    rows: list[StepJournal],
    settings: Settings,
    now: dt.datetime,
    incarnation: str | None,
    lost_before: dt.datetime | None = None,
) -> tuple[StepJournal, str] | None:
    first = next((r for r in rows if r.status != _J.DONE), None)
    if first is None or first.status in JOURNAL_ENDED:
        return None  # finished, or waiting for an operator's retry or abort
    deadline = dt.timedelta(seconds=settings.reconcile_deadline)
    prev = rows[rows.index(first) - 1] if rows.index(first) > 0 else None
    became_next = max(first.enqueued_at, (prev.finished_at if prev else None) or first.enqueued_at)
    if lost_before is not None:
        # NOTE: a message sent before the loss was seen may have reached the
        # new broker instead (it came back a moment earlier); sending it again
        # then only makes a duplicate, which waits on the step's row locks
        # and finds it done. A running step is left to its worker, which
        # sends the next message when it finishes, or to its lease.
        if first.status == _J.PENDING and became_next < lost_before:
            return first, "the broker lost its data"
        if first.status == _J.RETRYING and (first.heartbeat_at or became_next) < lost_before:
            return first, "the broker lost its data (with the retry)"
    if first.status == _J.PENDING and became_next < now - deadline:
        return first, "next step never started"
    if first.status == _J.RUNNING:
        if incarnation is not None and journal.superseded(first, incarnation):
            return first, f"its worker {first.worker} restarted"
        if not journal.lease_live(first, now) and became_next < now - deadline:
            return first, "the running step's lease lapsed"
    if first.status == _J.RETRYING:
        waited = first.heartbeat_at or became_next
        if waited < now - deadline - dt.timedelta(seconds=settings.retry_backoff_max):
            return first, "its retry never arrived"
    return None


def stalled(
    session: Session,
    settings: Settings,
    *,
    now: dt.datetime | None = None,
    host: str | None = None,
    incarnation: str | None = None,
    lost_before: dt.datetime | None = None,
) -> list[Redrive]:
    """The workflows to re-drive, optionally only those whose next step runs on ``host``.

    ``incarnation`` is a starting worker's: steps an earlier process of that
    worker was running count as stalled at once. ``lost_before`` is when the
    broker was found to have lost its data: messages sent before then count
    as lost at once.
    """
    now = now or utcnow()
    # NOTE: IN the open statuses, not NOT IN the ended ones: the same set, but
    # only this form lets the planner use the partial index on open rows
    # (ix_step_journal_open), so a pass reads the workflows in flight and not
    # the whole history.
    open_rows = StepJournal.status.in_([status.value for status in JOURNAL_OPEN])
    # Each open flow of a migration, from its first open step. Only that
    # step's predecessor and the steps after it are read: a flow's done steps
    # before them, and the flows already finished (a confirm's resize), decide
    # nothing here, and loading them was most of a pass's time with thousands
    # of workflows in flight.
    first_open = (
        select(
            StepJournal.migration_id,
            StepJournal.flow,
            func.min(StepJournal.position).label("position"),
        )
        .join(Migration, Migration.id == StepJournal.migration_id)
        .where(open_rows, Migration.status.not_in(_GIVEN_UP))
        .group_by(StepJournal.migration_id, StepJournal.flow)
        .subquery()
    )
    # A delete waiting behind its confirm is the confirm workflow's to re-drive.
    confirming = select(Migration.instance_uuid).where(
        Migration.status == MigrationStatus.CONFIRMING
    )
    # Two statements rather than one with an OR: either side can use its
    # index, where the OR made the database filter the whole journal.
    migration_rows = (
        select(StepJournal)
        .join(
            first_open,
            (StepJournal.migration_id == first_open.c.migration_id)
            & (StepJournal.flow == first_open.c.flow)
            & (StepJournal.position >= first_open.c.position - 1),
        )
        .where(StepJournal.status != _J.SUPERSEDED)
        .order_by(StepJournal.migration_id, StepJournal.flow, StepJournal.position)
    )
    operation_rows = (
        select(StepJournal)
        .where(
            StepJournal.migration_id.is_(None),
            open_rows,
            StepJournal.instance_uuid.not_in(confirming),
        )
        .order_by(StepJournal.instance_uuid, StepJournal.flow, StepJournal.position)
    )
    groups: dict[tuple[int | str, str], list[StepJournal]] = defaultdict(list)
    for query in (migration_rows, operation_rows):
        for row in session.scalars(query):
            subject = row.migration_id if row.migration_id is not None else row.instance_uuid
            groups[(subject, row.flow)].append(row)
    found = []
    for (subject, flow), rows in groups.items():
        stall = _stall_reason(rows, settings, now, incarnation, lost_before)
        if stall is None or (host is not None and stall[0].host != host):
            continue
        first, reason = stall
        rest = tuple(journal.PlannedStep(r.step, r.host) for r in rows[rows.index(first) :])
        found.append(Redrive(subject, flow, first.step, reason, rest, first.id))
    return found


def _host_up(session: Session, host: str, settings: Settings) -> bool:
    svc = services.get(session, host)
    return svc is not None and services.is_up(svc, settings.service_down_time)


def redrive(database: Database, app: Celery, settings: Settings, item: Redrive) -> bool:
    """Send the rest of a stalled workflow again, unless someone else just did."""
    with database.transaction() as s:
        row = journal.get(s, item.row_id, lock=True)
        if row is None or row.status in JOURNAL_ENDED:
            return False
        if not _host_up(s, row.host, settings):
            return False  # it would only wait in a queue nobody reads
        # Restart the deadline, so the next pass does not send it again.
        row.enqueued_at = utcnow()
        inst = s.get(Instance, row.instance_uuid)
        then = None
        if (
            item.flow == flows.CONFIRM.name
            and inst is not None
            and inst.task_state == TaskState.DELETING
            and inst.host is not None
        ):
            # The delete that asked for this confirm follows it, as when it was first sent.
            then = routing.signature(app, flows.DELETE.last.task, inst.uuid, inst.host)
    log.warning(
        "re-driving %s of %s from %s: %s",
        item.flow,
        item.subject,
        item.step,
        item.reason,
        extra={"migration_id": item.migration_id, "step": item.step},
    )
    routing.launch(app, item.subject, item.steps, then=then)
    return True


def reconcile(
    settings: Settings,
    database: Database,
    app: Celery,
    *,
    host: str | None = None,
    incarnation: str | None = None,
    now: dt.datetime | None = None,
    lost_before: dt.datetime | None = None,
) -> list[Redrive]:
    """One pass: re-drive every stalled workflow, instance operations included."""
    with database.snapshot() as s:
        items = stalled(
            s, settings, now=now, host=host, incarnation=incarnation, lost_before=lost_before
        )
    return [item for item in items if redrive(database, app, settings, item)]
