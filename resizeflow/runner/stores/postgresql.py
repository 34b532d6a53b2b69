"""The journal store on PostgreSQL: a step in as few round trips as the protocol allows.

A delivery's claim, the BEGIN of the step's transaction and the lock of its
rows travel as one message, the claim still committed on its own before the
BEGIN; a lock that opens a transaction carries its BEGIN; the step's last
writes travel with its COMMIT, and its finish is one statement (the row's
``done``, the action event and the action's end as CTEs). How several
statements go in one message is this store's own business
(:mod:`._onetrip`).
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy.orm import Session

from resizeflow.db import api as dbapi
from resizeflow.db import journal
from resizeflow.db.models import StepJournal
from resizeflow.errors import ConfigError
from resizeflow.runner.stores import _onetrip
from resizeflow.runner.stores.base import JournalStore, Opening, lock_statement
from resizeflow.steps.context import HostRuntime


@functools.cache
def _finish_statement(event: bool, ends_action: bool) -> Any:
    """The journal row's ``done``, joined with the step's writes to its action (the
    event, and the action's end) as CTEs of one statement."""
    done = journal.done_statement()
    if not event:
        return done
    ctes = [done.cte("step_done")]
    if ends_action:
        ctes.append(dbapi.finish_action_statement(False).cte("action_done"))
    return dbapi.event_upsert("postgresql").add_cte(*ctes)


class PostgresStore(JournalStore):
    def __init__(self, runtime: HostRuntime) -> None:
        super().__init__(runtime)
        if runtime.db.engine.dialect.driver != "psycopg":
            raise ConfigError(
                "the step runner needs psycopg 3 on PostgreSQL: a postgresql+psycopg:// URL"
            )
        _onetrip.install(runtime.db.engine)

    def open(self, session: Session, who: journal.Claimant) -> Opening:
        """Claim the step and lock its rows in one round trip.

        The message is ``claim; COMMIT; BEGIN; lock``. The claim commits on its
        own before anything else runs, exactly as :func:`journal.claim` does, so
        an attempt is on record even if the worker dies mid-step; the lock runs
        in the step's transaction and finds the row by key and step, as the
        claim did, and sees it claimed. When the claim did not take the step the
        caller rolls that transaction back.
        """
        conn = _onetrip.unmanaged(session)
        claim_sql = _onetrip.render(
            conn, journal.claim_statement(who.subject), journal.claim_params(who)
        )
        prefix = _onetrip.Prefix((claim_sql, _onetrip.COMMIT, _onetrip.BEGIN))
        stmt = lock_statement(who.subject, self.dialect, by_key=True)
        params = {"b_key": who.key, "b_step": who.step}
        ctx = self._locked(session, who.subject, stmt, params, {_onetrip.BEFORE: prefix})
        claim = journal.Claim.of(prefix.rows[0] if prefix.rows else None, who.holder)
        if claim is None or ctx is None:
            return Opening(claim, locked=True)
        if ctx.journal.id != claim.row_id:
            # The flow was planned again between the two (an operator's retry).
            session.rollback()
            return Opening(claim)
        return Opening(claim, locked=True, ctx=ctx)

    def held_after_failed_open(self, who: journal.Claimant) -> int | None:
        # The claim may have committed before the lock failed.
        with self.db.autocommit() as conn:
            return journal.held_by(conn, who)

    def _begin_options(self, session: Session) -> dict[str, Any]:
        # The lock carries the BEGIN in its own round trip (``SELECT ... FOR
        # UPDATE; BEGIN``: the server makes the row locks of the statement part
        # of the transaction that BEGIN opens), instead of psycopg sending it alone.
        _onetrip.unmanaged(session)
        return {_onetrip.THEN: _onetrip.BEGIN}

    def send_commit(self, session: Session) -> None:
        _onetrip.flush_then(session, [], _onetrip.COMMIT)

    def finish(
        self, session: Session, row: StepJournal, *, ends_action: bool, commit: bool = False
    ) -> None:
        # One statement, and one round trip, for every step; with ``commit`` the
        # session's pending changes, the statement and the COMMIT go in one
        # round trip (see :func:`_onetrip.flush_then`), and the session's own
        # commit then finds nothing left to send.
        done = journal.finishing(row, host=self.runtime.host, ends_action=ends_action)
        stmt = _finish_statement(done.event, done.ends_action)
        if commit:
            _onetrip.flush_then(session, [(stmt, done.params)], _onetrip.COMMIT)
        else:
            session.execute(stmt, done.params)
        done.written()
