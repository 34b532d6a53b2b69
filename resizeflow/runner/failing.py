"""A delivery that failed: retried later, or failed for good and the workflow errored out.

:mod:`resizeflow.retry` decides whether a failure is transient or final.
Either way the failure is recorded on the step's journal row first, unless
another copy of the step finished it or took it over meanwhile. A final
failure also errors the workflow out (see
:func:`~resizeflow.steps.failure.error_out`), in the same transaction, and
ends the step's action event in error.
"""

from __future__ import annotations

import logging
import traceback
from typing import TYPE_CHECKING, Any

from celery import Task
from celery.exceptions import Ignore
from sqlalchemy.orm import Session

from resizeflow import errors, flows, retry
from resizeflow.conf import Settings
from resizeflow.db import api as dbapi
from resizeflow.db import journal
from resizeflow.db.models import StepJournal
from resizeflow.openstack.base import Notification
from resizeflow.states import JOURNAL_ENDED, JournalStatus
from resizeflow.steps.failure import error_out

if TYPE_CHECKING:
    from resizeflow.runner.delivery import Delivery

log = logging.getLogger(__name__)


def retry_later(task: Task[Any, Any], settings: Settings, exc: Exception) -> Exception:
    """Celery's retry, after the policy's backoff; raise what it returns."""
    countdown = retry.backoff(settings, task.request.retries)
    return task.retry(countdown=countdown, exc=exc, max_retries=None)


def failed_opening(d: Delivery, exc: Exception) -> None:
    """The claim's round trip failed: if the claim committed, this delivery
    holds the step, and fails it as a step failure; otherwise nothing was done."""
    try:
        row_id = d.store.held_after_failed_open(d.claimant)
    except retry.TRANSIENT:
        row_id = None
    if row_id is None:
        if isinstance(exc, retry.TRANSIENT):
            # The database or broker hiccupped before the step started:
            # nothing was done, so simply try again later.
            raise d.retry_later(exc) from exc
        return
    d.row_id = row_id
    with d.runtime.executing_step(row_id):
        retry_or_fail(d, exc)


def retry_or_fail(d: Delivery, exc: Exception) -> None:
    """Record the failure of the step ``d`` holds; retry it, or fail it for good.

    Call it from the ``except`` block that caught ``exc``: the traceback recorded
    is the one being handled.
    """
    details = traceback.format_exc()
    retries = d.task.request.retries
    final = retry.is_final(d.runtime.settings, exc, retries)
    log.warning(
        "step %s failed (%s, attempt %d): %s",
        d.step.task,
        "final" if final else "will retry",
        retries + 1,
        exc,
    )
    try:
        notes = _record_failure(d, exc, details, final)
    except retry.TRANSIENT as db_exc:
        # NOTE: the database itself is unreachable, so the failure cannot even
        # be recorded. Try the step again later rather than lose the chain;
        # its journal row still says running, and its lease will lapse.
        log.warning("cannot record the failure of %s: %s", d.step.task, db_exc)
        raise d.retry_later(exc) from exc
    if not final:
        raise d.retry_later(exc)
    d.middleware.committed(d, notes)


def _record_failure(d: Delivery, exc: Exception, details: str, final: bool) -> list[Notification]:
    notes: list[Notification] = []
    row_id = d.row_id
    with d.runtime.db.transaction() as s:
        # Same lock order as the step itself: instance, migration, journal.
        ctx = d.store.lock(s, d.flow.subject, row_id) if final else None
        row = ctx.journal if ctx is not None else journal.get(s, row_id, lock=True)
        assert row is not None
        if row.status in JOURNAL_ENDED or (
            row.status == JournalStatus.RUNNING and row.holder != d.holder
        ):
            # NOTE: another copy of this step (a redelivery, or the reconciler's)
            # finished it, or took it over during its hypervisor work, while
            # this one failed. Marking it failed or retrying would undo that
            # and run the step twice; that copy carries the chain on.
            log.info("step %s is another copy's (%s)", row.step, row.status)
            raise Ignore()
        # A rollback records the failure itself, as its fault does.
        cause = exc.inner if isinstance(exc, errors.InstanceFaultRollback) else exc
        journal.fail(row, f"{type(cause).__name__}: {cause}", final=final)
        _failure_event(s, d.runtime.host, row, details if final else None)
        if ctx is not None:
            inst, mig = ctx.instance, ctx.migration
            row.restore = {
                "migration_status": mig.status.value if mig is not None else None,
                "vm_state": inst.vm_state.value,
                "task_state": inst.task_state.value if inst.task_state else None,
            }
            error_out(ctx, row.step, exc, details)
            notes = ctx.notifications
    return notes


def _failure_event(
    session: Session, host: str, row: StepJournal, final_traceback: str | None
) -> None:
    """Write a failed step's action event. A final failure (with its traceback)
    ends the event in error, and the action with it; a step waiting for its
    retry (no traceback) shows as an event in progress."""
    if row.action_id is None:
        return
    dbapi.record_event(
        session,
        dbapi.event_params(
            row.action_id,
            flows.step(row.step).event,
            host=host,
            start=row.started_at,
            result="Error" if final_traceback is not None else None,
            traceback=final_traceback,
        ),
    )
    if final_traceback is not None:
        dbapi.finish_action(session, row.action_id, error=True)
