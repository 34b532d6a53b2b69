"""A step run inside a TaskFlow task: resizeflow's step code, without resizeflow's engine.

What a TaskFlow task's ``execute`` does, so that only the engine differs
between the two sides of the comparison: one transaction locks the
instance, the migration and the step's journal row with resizeflow's own
lock statement (:meth:`resizeflow.runner.stores.JournalStore.lock`), calls the step
function from the flow table, and commits. A step with a hypervisor phase
commits, does the hypervisor work with no row locked, locks again and
commits its effects, as resizeflow's runner does. The same virt driver does
the work: this runs inside the host's worker process, on its runtime.

What it leaves out is resizeflow's engine around the step: the claim
statement (delivery count, lease, holder token), the lease renewal and the
retry policy. TaskFlow keeps a task's state in its own persistence instead.
The step's journal row is still looked up (one statement, where resizeflow's
claim is one) and marked done in the step's commit, because that one
statement also writes the step's instance action event, which the API
shows; it is also where the bench reads when the workflow ended, for both
engines alike.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm.attributes import set_committed_value

from resizeflow import errors, flows
from resizeflow.db import journal
from resizeflow.db.models import StepJournal
from resizeflow.runner import phases
from resizeflow.runner.middleware import publish
from resizeflow.runner.stores import JournalStore, store_for
from resizeflow.states import JournalStatus
from resizeflow.steps.context import StepContext, current


@functools.cache
def _row_id_statement() -> Any:
    # The journal's own rule for which row a delivery is for (a migration's
    # live row of the step), built once.
    return select(journal.row_of(flows.Subject.MIGRATION))


def _as_claimed(row: StepJournal) -> None:
    """What resizeflow's claim would have written, in the ORM's copy only.

    The row stays ``pending`` in the database until the step's commit marks
    it ``done``: TaskFlow records that the task is running in its own tables.
    """
    if row.status == JournalStatus.PENDING:
        set_committed_value(row, "status", JournalStatus.RUNNING)


def _lock(
    store: JournalStore, session: Any, task_name: str, row_id: int, *, again: bool
) -> StepContext:
    ctx = store.lock(session, flows.Subject.MIGRATION, row_id, again=again)
    if ctx is None:
        raise errors.StepFailed(step=task_name, reason="the server was deleted")
    _as_claimed(ctx.journal)
    return ctx


def run(task_name: str, migration_id: int) -> None:
    """Run step ``task_name`` of the migration in this worker's host runtime."""
    rt = current()
    store = store_for(rt)
    flow, step = flows.flow_of(task_name), flows.step(task_name)
    with rt.db.session() as s:
        with s.begin():
            row_id = s.scalar(_row_id_statement(), {"b_key": migration_id, "b_step": task_name})
            if row_id is None:
                raise errors.StepFailed(step=task_name, reason=f"migration {migration_id}: no plan")
            ctx = _lock(store, s, task_name, row_id, again=False)
            if ctx.journal.status == JournalStatus.DONE:
                return
            steps = phases.resolve(step)(ctx)
            work = phases.next_phase(steps)
            if work is None:
                store.finish(s, ctx.journal, ends_action=step is flow.last)
        if work is not None:
            assert steps is not None
            publish(rt, ctx.notifications)
            ctx.notifications.clear()
            result = work.run(time.monotonic() + rt.settings.step_timeout)
            with s.begin():
                _lock(store, s, task_name, row_id, again=True)
                phases.last_phase(steps, result)
                store.finish(s, ctx.journal, ends_action=step is flow.last)
    publish(rt, ctx.notifications)
