"""One delivery of one step, from its claim to its finish or its failure.

Every step of every flow, instance operations included, runs the same way. It
starts with one statement that commits on its own: it counts the delivery and
marks the journal row ``running`` under a lease, so that an attempt is on
record even if the worker dies mid-step. Only the delivery that took the
step (its token is in the row) runs it: a duplicate that finds the step held
under a live lease waits for that copy to end, and takes the step only if
its lease lapses. Then one transaction locks the instance, the migration (for
a migration's flows) and the journal row, returns at once if the step is
already done, and otherwise runs the step, marks it done and writes its
action event in the same commit. Because ``acks_late`` may deliver a message
twice, those checks are what make a redelivery change nothing.

How many round trips that takes is the journal store's business (see
:mod:`resizeflow.runner.stores`): on PostgreSQL the claim, the transaction's
BEGIN and the lock travel as one message, the claim still committed on its
own before the BEGIN, and the step's last writes travel with its COMMIT.

A step with a hypervisor phase (see :class:`~resizeflow.steps.context.HypervisorWork`)
splits that transaction in two: it reads its rows and commits, does the long
work with no row locked under a renewed and fenced lease, then locks the rows
again and commits its effects with the journal row. A copy whose lease another
copy took over commits nothing.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
import uuid
from typing import Any

from celery import Task
from celery.exceptions import Ignore, Retry
from sqlalchemy.orm import Session

from resizeflow import errors, flows, retry
from resizeflow.db import journal
from resizeflow.runner import failing, phases
from resizeflow.runner.middleware import DEFAULT, Chain
from resizeflow.runner.stores import JournalStore, Opening, store_for
from resizeflow.states import JOURNAL_ENDED, JournalStatus, MigrationStatus
from resizeflow.steps.context import HostRuntime, PhasedStep, StepContext, current

log = logging.getLogger(__name__)

_J = JournalStatus


class Delivery:
    """One delivery of ``step`` for ``key`` (a migration id or an instance uuid).

    It carries what every part of the step's path needs: the Celery task (its
    retry count, its retry), the host's runtime, the flow and step, the key,
    the delivery's own ``holder`` token, its journal store and its middleware;
    and, as the path goes on, its claim, its journal row and its step's context.
    """

    def __init__(
        self,
        task: Task[Any, Any],
        flow: flows.Flow,
        step: flows.Step,
        key: Any,
        *,
        runtime: HostRuntime | None = None,
        middleware: Chain = DEFAULT,
    ) -> None:
        self.task, self.flow, self.step, self.key = task, flow, step, key
        self.runtime = runtime or current()
        self.middleware = middleware
        self.holder = uuid.uuid4().hex  # this delivery's own token
        self.store: JournalStore = store_for(self.runtime)
        self.claim: journal.Claim | None = None
        self.row_id = 0  # the step's journal row, once known
        self.ctx: StepContext | None = None  # the step's context, once its rows are locked

    @functools.cached_property
    def claimant(self) -> journal.Claimant:
        rt = self.runtime
        return journal.Claimant(
            subject=self.flow.subject,
            key=self.key,
            step=self.step.task,
            worker=rt.incarnation or rt.host,
            holder=self.holder,
            lease=rt.settings.step_lease,
        )

    def run(self) -> Any:
        """Deliver the step; returns the key, for the chain's next step."""
        with self.middleware.delivering(self), self.runtime.db.session() as s:
            opening = self._open(s)
            claim = self.claim = opening.claim
            if claim is None or claim.status != _J.RUNNING or not claim.taken:
                s.rollback()  # the transaction the claim opened has nothing to run
                opening = Opening(claim)
            claim = self._wait_for_holder()
            if claim is None:
                if self.flow.subject is flows.Subject.INSTANCE:
                    return self.key  # no operation of this kind was ever planned for it
                # NOTE: no live row: an abort handed the flow back (its rows are
                # superseded) while this message waited in a queue. The chain
                # ends here, and nothing of the flow runs.
                log.warning(
                    "step %s of migration %s has no live journal row; not run",
                    self.step.task,
                    self.key,
                )
                raise Ignore()
            if claim.status == _J.DONE:
                return self.key
            if claim.status in JOURNAL_ENDED:
                raise Ignore()
            self.row_id = claim.row_id
            with self.middleware.running(self), self.runtime.executing_step(claim.row_id):
                self._execute(s, opening)
        return self.key

    def retry_later(self, exc: Exception) -> Exception:
        return failing.retry_later(self.task, self.runtime.settings, exc)

    # -- claim ------------------------------------------------------------------

    def _open(self, s: Session) -> Opening:
        try:
            return self.store.open(s, self.claimant)
        except (Ignore, Retry):
            raise
        except Exception as exc:
            s.rollback()
            failing.failed_opening(self, exc)
            raise

    def _claim_again(self) -> journal.Claim | None:
        try:
            return self.store.claim(self.claimant)
        except retry.TRANSIENT as exc:
            # The database or broker hiccupped before the step started: nothing
            # was done, so simply try again later.
            raise self.retry_later(exc) from exc

    def _wait_for_holder(self) -> journal.Claim | None:
        """The claim once no live copy holds the step but this one."""
        claim = self.claim
        while claim is not None and claim.status == _J.RUNNING and not claim.taken:
            # NOTE: a live copy holds the step, maybe in its hypervisor phase with
            # no row locked: wait for it to end rather than run beside it. If its
            # lease lapses (its worker died), claim the step again.
            ended = self._holder_ended(claim.row_id)
            if ended is None:
                claim = self.claim = self._claim_again()
            elif ended == _J.RETRYING:
                raise Ignore()  # it failed transiently: its own retry carries the chain on
            else:
                claim = self.claim = dataclasses.replace(claim, status=ended)
        return claim

    def _holder_ended(self, row_id: int) -> JournalStatus | None:
        """Wait while another copy holds the step under a live lease.

        Returns the status the step ended in (or ``retrying``), or None once the
        holder's lease lapsed or the step can be claimed again.
        """
        poll = min(0.5, self.runtime.settings.step_lease / 4)
        while True:
            time.sleep(poll)
            row = self.store.row(row_id)
            if row is None:
                return None
            if row.status in JOURNAL_ENDED or row.status == _J.RETRYING:
                return JournalStatus(row.status)
            if row.status != _J.RUNNING or not journal.lease_live(row):
                return None

    # -- lock, run, commit ----------------------------------------------------------

    def _execute(self, s: Session, opening: Opening) -> None:
        try:
            finished = self._run(s, opening)
        except errors.LeaseLost as exc:
            # The copy that took the step over carries the chain on; this one's
            # hypervisor work was safe to repeat, and it commits nothing.
            log.warning("%s", exc.message)
            raise Ignore() from exc
        except errors.WorkflowAborted as exc:
            log.warning("%s", exc.message)
            with self.runtime.db.transaction() as t:
                aborted = journal.get(t, self.row_id, lock=True)
                assert aborted is not None
                # A delete may have ended the row already (aborted).
                if aborted.status not in JOURNAL_ENDED:
                    journal.fail(aborted, exc.message, final=True)
            raise Ignore() from exc
        except Exception as exc:
            failing.retry_or_fail(self, exc)
            raise
        if finished:
            assert self.ctx is not None
            log.info("step %s done on %s", self.step.task, self.runtime.host)
            self.middleware.committed(self, self.ctx.notifications)

    def _run(self, s: Session, opening: Opening) -> bool:
        """Lock the rows, run the step and commit it; False if it had nothing to do."""
        # ``opening.locked``: the claim's round trip has begun the transaction
        # and locked the rows already.
        first = s.get_transaction() if opening.locked else s.begin()
        assert first is not None
        with first:
            if opening.locked:
                ctx = opening.ctx
            else:
                ctx = self.store.lock(s, self.flow.subject, self.row_id, begins=True)
            if ctx is None or self._ended_meanwhile(ctx):
                self._end_unrun(s, ctx)
                return False
            if ctx.journal.status == _J.DONE:
                return False
            self._check_held(ctx)
            self.ctx = ctx
            self.middleware.before_step(self, ctx)
            steps = phases.resolve(self.step)(ctx)
            work = phases.next_phase(steps)
            if work is None:
                self._finish(s, ctx)
            else:
                # What the step wrote before its hypervisor work commits with the
                # COMMIT, in one round trip where the store can.
                self.store.send_commit(s)
        if work is not None:
            assert steps is not None
            # NOTE: the rows are committed and unlocked here: a request that
            # locks the server is answered while the hypervisor works.
            self.middleware.committed(self, ctx.notifications)
            ctx.notifications.clear()
            result = phases.run_unlocked(self, work)
            return self._after_hypervisor(s, ctx, steps, result)
        return True

    def _after_hypervisor(
        self, s: Session, ctx: StepContext, steps: PhasedStep, result: Any
    ) -> bool:
        """Lock the rows again and commit the step's effects; False if it has none
        to commit any more."""
        with s.begin():
            again = self.store.lock(s, self.flow.subject, self.row_id, again=True, begins=True)
            if again is None:
                self._end_unrun(s, None)
                return False
            if again.journal.status in JOURNAL_ENDED:
                # Another copy finished it, or a delete ended it meanwhile.
                log.info("step %s %s meanwhile", self.step.task, again.journal.status)
                return False
            self._check_held(again)
            phases.last_phase(steps, result)
            self._finish(s, ctx)
        return True

    def _finish(self, s: Session, ctx: StepContext) -> None:
        last = self.step is self.flow.last
        self.store.finish(s, ctx.journal, ends_action=last, commit=True)

    def _check_held(self, ctx: StepContext) -> None:
        if not journal.holds(ctx.journal, self.holder):
            raise errors.LeaseLost(step=self.step.task, holder=ctx.journal.worker)

    def _ended_meanwhile(self, ctx: StepContext) -> bool:
        """Whether the work was ended while this step waited: its migration errored
        out, or its instance no longer shows the operation's task_state (a reset)."""
        if ctx.journal.status == _J.DONE:
            return False
        if ctx.migration is not None and ctx.migration.status == MigrationStatus.ERROR:
            raise errors.WorkflowAborted(
                migration_id=ctx.migration.id, status="error", step=ctx.journal.step
            )
        flow = self.flow
        return flow.task_state is not None and ctx.instance.task_state not in flow.task_states

    def _end_unrun(self, s: Session, ctx: StepContext | None) -> None:
        """Close a step that has nothing left to do, so the reconciler lets it be."""
        row = ctx.journal if ctx is not None else journal.get(s, self.row_id, lock=True)
        if row is None or row.status in (_J.DONE, _J.ABORTED):
            return
        reason = "the server was deleted" if ctx is None else "the server's task state changed"
        journal.end(row, _J.ABORTED, reason)
        log.info("step %s not run: %s", row.step, reason)
