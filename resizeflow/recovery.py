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
step's row locks and then finds the step done. Single-task operations on a
server (spawn, stop, start, delete) are re-sent the same way when their
task_state has not cleared within the deadline.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from dataclasses import dataclass

from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session

from resizeflow import workflows
from resizeflow.conf import Settings
from resizeflow.db import journal, services
from resizeflow.db.models import Instance, Migration, StepJournal, utcnow
from resizeflow.db.session import Database
from resizeflow.states import MigrationStatus, TaskState

log = logging.getLogger(__name__)

# The single-task operation that clears each task_state.
INSTANCE_OPS = {
    TaskState.SPAWNING: workflows.SPAWN,
    TaskState.POWERING_OFF: workflows.STOP,
    TaskState.POWERING_ON: workflows.START,
    TaskState.DELETING: workflows.DELETE,
}
_GIVEN_UP = (MigrationStatus.ERROR, MigrationStatus.FAILED)


@dataclass(frozen=True)
class Redrive:
    migration_id: int
    flow: str
    step: str
    reason: str
    steps: tuple[journal.PlannedStep, ...]


def _stall_reason(
    rows: list[StepJournal], settings: Settings, now: dt.datetime, incarnation: str | None
) -> tuple[StepJournal, str] | None:
    first = next((r for r in rows if r.status != journal.DONE), None)
    if first is None or first.status == journal.FAILED:
        return None  # finished, or waiting for an operator's retry or abort
    deadline = dt.timedelta(seconds=settings.reconcile_deadline)
    prev = rows[rows.index(first) - 1] if rows.index(first) > 0 else None
    became_next = max(first.enqueued_at, (prev.finished_at if prev else None) or first.enqueued_at)
    if first.status == journal.PENDING and became_next < now - deadline:
        return first, "next step never started"
    if first.status == journal.RUNNING:
        if incarnation is not None and journal.superseded(first, incarnation):
            return first, f"its worker {first.worker} restarted"
        if not journal.lease_live(first, now) and became_next < now - deadline:
            return first, "the running step's lease lapsed"
    if first.status == journal.RETRYING:
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
) -> list[Redrive]:
    """The workflows to re-drive, optionally only those whose next step runs on ``host``.

    ``incarnation`` is a starting worker's: steps an earlier process of that
    worker was running count as stalled at once.
    """
    now = now or utcnow()
    open_migrations = (
        select(StepJournal.migration_id)
        .join(Migration, Migration.id == StepJournal.migration_id)
        .where(StepJournal.status != journal.DONE, Migration.status.not_in(_GIVEN_UP))
        .distinct()
    )
    flows: dict[tuple[int, str], list[StepJournal]] = defaultdict(list)
    for row in session.scalars(
        select(StepJournal)
        .where(StepJournal.migration_id.in_(open_migrations))
        .order_by(StepJournal.migration_id, StepJournal.flow, StepJournal.position)
    ):
        flows[(row.migration_id, row.flow)].append(row)
    found = []
    for (mig_id, flow), rows in flows.items():
        stall = _stall_reason(rows, settings, now, incarnation)
        if stall is None or (host is not None and stall[0].host != host):
            continue
        first, reason = stall
        rest = tuple(journal.PlannedStep(r.step, r.host) for r in rows[rows.index(first) :])
        found.append(Redrive(mig_id, flow, first.step, reason, rest))
    return found


def _host_up(session: Session, host: str, settings: Settings) -> bool:
    svc = services.get(session, host)
    return svc is not None and services.is_up(svc, settings.service_down_time)


def redrive(database: Database, app: Celery, settings: Settings, item: Redrive) -> bool:
    """Send the rest of a stalled workflow again, unless someone else just did."""
    with database.transaction() as s:
        row = journal.get(s, item.migration_id, item.step, lock=True)
        if row is None or row.status in (journal.DONE, journal.FAILED):
            return False
        if not _host_up(s, row.host, settings):
            return False  # it would only wait in a queue nobody reads
        # Restart the deadline, so the next pass does not send it again.
        row.enqueued_at = utcnow()
        mig = s.get(Migration, item.migration_id)
        assert mig is not None
        inst = s.get(Instance, mig.instance_uuid)
        then = None
        if item.flow == "confirm" and inst is not None and inst.task_state == TaskState.DELETING:
            # The delete that asked for this confirm follows it, as when it was first sent.
            assert inst.host is not None
            then = workflows.signature(app, workflows.DELETE, inst.uuid, inst.host)
    log.warning(
        "re-driving %s of migration %s from %s: %s",
        item.flow,
        item.migration_id,
        item.step,
        item.reason,
        extra={"migration_id": item.migration_id, "step": item.step},
    )
    workflows.launch(app, item.migration_id, item.steps, then=then)
    return True


def stuck_instance_ops(
    session: Session, settings: Settings, *, now: dt.datetime | None = None, host: str | None = None
) -> list[tuple[str, str, str]]:
    """(task name, instance uuid, host) for operations whose task_state never cleared."""
    cutoff = (now or utcnow()) - dt.timedelta(seconds=settings.reconcile_deadline)
    confirming = select(Migration.instance_uuid).where(
        Migration.status == MigrationStatus.CONFIRMING
    )
    stmt = select(Instance).where(
        Instance.deleted.is_(False),
        Instance.task_state.in_(list(INSTANCE_OPS)),
        Instance.updated_at < cutoff,
        # A delete waiting behind its confirm is the confirm workflow's to re-drive.
        Instance.uuid.not_in(confirming),
    )
    if host is not None:
        stmt = stmt.where(Instance.host == host)
    return [
        (INSTANCE_OPS[inst.task_state], inst.uuid, inst.host)
        for inst in session.scalars(stmt)
        if inst.task_state is not None and inst.host is not None
    ]


def resend_instance_op(database: Database, app: Celery, op: tuple[str, str, str]) -> None:
    name, uuid, host = op
    with database.transaction() as s:
        inst = s.get(Instance, uuid, with_for_update=True)
        if inst is None or inst.task_state is None:
            return
        inst.updated_at = utcnow()  # restart its deadline
    log.warning("re-sending %s for %s", name, uuid, extra={"instance_uuid": uuid, "host": host})
    workflows.launch_instance_task(app, name, uuid, host)


def reconcile(
    settings: Settings,
    database: Database,
    app: Celery,
    *,
    host: str | None = None,
    incarnation: str | None = None,
    now: dt.datetime | None = None,
) -> list[Redrive]:
    """One pass: re-drive every stalled workflow and stuck operation. Returns the re-driven."""
    with database.snapshot() as s:
        items = stalled(s, settings, now=now, host=host, incarnation=incarnation)
        ops = stuck_instance_ops(s, settings, now=now, host=host)
    done = [item for item in items if redrive(database, app, settings, item)]
    for op in ops:
        resend_instance_op(database, app, op)
    return done
