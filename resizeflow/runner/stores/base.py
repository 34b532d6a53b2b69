"""The step journal as the step runner uses it: what every store does, and what each must.

A store sends a delivery's statements to its database: the claim, the lock
of the step's rows, the lease renewals and the finish. What a backend can
put in one round trip differs (see :mod:`.postgresql` and :mod:`.sqlite`);
what the statements do, and the order in which they lock, does not.
"""

from __future__ import annotations

import abc
import functools
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from resizeflow import flows
from resizeflow.db import journal
from resizeflow.db.models import Instance, InstanceAction, Migration, StepJournal
from resizeflow.openstack.network import SqlNetwork
from resizeflow.openstack.volume import InstanceVolumes
from resizeflow.steps.context import HostRuntime, StepContext


@dataclass(frozen=True)
class Opening:
    """What a delivery's first round trip found.

    ``claim``: the step's row after the claim; None when the step has no live
    row. ``locked``: the same round trip also began the step's transaction and
    locked its rows (PostgreSQL), and ``ctx`` is then the step's context, or
    None when its instance is gone. Otherwise the rows are locked later, in a
    transaction of their own.
    """

    claim: journal.Claim | None
    locked: bool = False
    ctx: StepContext | None = None


@functools.cache
def lock_statement(
    subject: flows.Subject, dialect: str, *, reads: bool = True, by_key: bool = False
) -> Any:
    """Lock the instance, the migration (a migration's flows) and the step's row.

    NOTE: PostgreSQL locks a join's rows in the order of its FROM list, so this
    takes instance, then migration, then journal row: the order used
    everywhere else (the service layer's compare-and-swap updates too), so it
    never deadlocks with them. Built once per subject: every step runs it.

    ``reads``: it also reads, in the same round trip, what nearly every step
    reads next and nothing can change under it: the action the step is for,
    and the instance's ports and volume attachments (for its VIFs and its
    notifications). They are not locked. A step's second lock, after its
    hypervisor phase, has them already.

    ``by_key``: the row is found as the claim finds it, by the task's key and
    the step (``b_key``, ``b_step``), not by its id (``b_row_id``).
    """
    migration = subject is flows.Subject.MIGRATION
    entities: list[Any] = [Instance, Migration] if migration else [Instance]
    entities.append(StepJournal)
    columns: list[Any] = []
    if reads:
        columns = [
            InstanceAction,
            SqlNetwork.ports_column(dialect, Instance.uuid),
            InstanceVolumes.attached_column(dialect, Instance.uuid),
        ]
    stmt: Any = select(*entities, *columns).select_from(Instance)
    if migration:
        stmt = stmt.join(Migration, Migration.instance_uuid == Instance.uuid).join(
            StepJournal, StepJournal.migration_id == Migration.id
        )
    else:
        stmt = stmt.join(StepJournal, StepJournal.instance_uuid == Instance.uuid)
    if reads:
        stmt = stmt.outerjoin(InstanceAction, InstanceAction.id == StepJournal.action_id)
    row = journal.row_of(subject) if by_key else bindparam("b_row_id")
    return stmt.where(StepJournal.id == row, Instance.deleted.is_(False)).with_for_update(
        of=entities
    )


class JournalStore(abc.ABC):
    """The journal of one host runtime's database, for the step runner."""

    def __init__(self, runtime: HostRuntime) -> None:
        self.runtime = runtime
        self.db = runtime.db
        self.dialect = runtime.db.engine.dialect.name

    # -- a round trip of its own each, committed on its own ---------------------

    def claim(self, who: journal.Claimant) -> journal.Claim | None:
        """Claim the step (see :func:`journal.claim`), in a round trip of its own."""
        with self.db.autocommit() as conn:
            return journal.claim(conn, who)

    def renew_lease(self, row_id: int, holder: str) -> bool:
        """Extend a running step's lease, fenced (see :func:`journal.renew_lease`)."""
        with self.db.autocommit() as conn:
            return journal.renew_lease(conn, row_id, holder, self.runtime.settings.step_lease)

    def row(self, row_id: int) -> StepJournal | None:
        """The journal row as it is now, read from a snapshot."""
        with self.db.snapshot() as s:
            return journal.get(s, row_id)

    # -- the step's transaction ---------------------------------------------------

    @abc.abstractmethod
    def open(self, session: Session, who: journal.Claimant) -> Opening:
        """A delivery's first round trip: its claim, and on backends that can send
        the lock with it, the step's transaction begun with its rows locked.

        The claim commits on its own, whatever follows it, so that an attempt
        is on record even if the worker dies mid-step.
        """

    @abc.abstractmethod
    def held_after_failed_open(self, who: journal.Claimant) -> int | None:
        """After :meth:`open` raised: the step's row, if the claim committed anyway
        and this delivery holds the step; None if it did not."""

    def lock(
        self,
        session: Session,
        subject: flows.Subject,
        row_id: int,
        *,
        again: bool = False,
        begins: bool = False,
    ) -> StepContext | None:
        """The step's context with its rows locked; None when its instance is gone.

        ``again``: the rows are in the session already, from the step's first
        transaction; the lock reads them anew over what it held.

        ``begins``: the lock is the transaction's first statement, which a
        backend may send with the ``BEGIN`` (see :meth:`_begin_options`).
        """
        options: dict[str, Any] = {"populate_existing": True} if again else {}
        if begins:
            options.update(self._begin_options(session))
        stmt = lock_statement(subject, self.dialect, reads=not again)
        return self._locked(session, subject, stmt, {"b_row_id": row_id}, options)

    def send_commit(self, session: Session) -> None:  # noqa: B027 (a no-op unless overridden)
        """Send the transaction's pending writes and its COMMIT now, where one round
        trip can carry them; the session's own commit then has nothing left to send.
        Elsewhere that commit, at the end of the caller's block, does both."""

    @abc.abstractmethod
    def finish(
        self, session: Session, row: StepJournal, *, ends_action: bool, commit: bool = False
    ) -> None:
        """Mark the step done and write its action event; the flow's last step ends the action.

        The event is that of the Nova method the step is part of: it succeeds with
        the method's last step and stays in progress until then (see
        :func:`journal.finishing`). The ORM's copy of ``row`` is brought up to date
        without being flushed again.

        ``commit``: this is the last write of the step's transaction, and the
        store may send the transaction's COMMIT with it (see :meth:`send_commit`).
        """

    # -- for the backends -------------------------------------------------------

    def _begin_options(self, session: Session) -> dict[str, Any]:
        """Execution options of a lock that is its transaction's first statement."""
        return {}

    def _locked(
        self,
        session: Session,
        subject: flows.Subject,
        stmt: Any,
        params: dict[str, Any],
        options: dict[str, Any],
    ) -> StepContext | None:
        """Run a lock statement, and make the step's context of the rows it locked."""
        found = session.execute(stmt, params, execution_options=options).one_or_none()
        if found is None:
            return None
        if subject is flows.Subject.MIGRATION:
            inst, mig, row, *reads = found
        else:
            (inst, row, *reads), mig = found, None
        ctx = StepContext(
            session=session, runtime=self.runtime, instance=inst, migration=mig, journal=row
        )
        if reads:
            action, ports, volumes = reads
            ctx.network.remember(inst.uuid, ports)
            ctx.volumes.remember(inst.uuid, volumes)
            if action is not None:
                ctx.initiator = action
        return ctx
