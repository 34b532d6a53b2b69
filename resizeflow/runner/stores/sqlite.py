"""The journal store on SQLite: one statement per round trip.

SQLite has no row locks and no data-modifying CTEs: every transaction takes
the database's write lock up front (``BEGIN IMMEDIATE``, see
:mod:`resizeflow.db.session`), which is what makes "re-read the rows under a
lock" hold across the worker processes that share one file, and a step's
finishing writes run one by one.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from resizeflow.db import api as dbapi
from resizeflow.db import journal
from resizeflow.db.models import StepJournal
from resizeflow.runner.stores.base import JournalStore, Opening


class SqliteStore(JournalStore):
    def open(self, session: Session, who: journal.Claimant) -> Opening:
        """The claim alone, in a transaction of its own; the rows are locked later."""
        return Opening(self.claim(who))

    def held_after_failed_open(self, who: journal.Claimant) -> int | None:
        # The claim was a transaction of its own, and it failed: nothing committed.
        return None

    def finish(
        self, session: Session, row: StepJournal, *, ends_action: bool, commit: bool = False
    ) -> None:
        done = journal.finishing(row, host=self.runtime.host, ends_action=ends_action)
        session.execute(journal.done_statement(), done.params)
        if done.event:
            session.execute(dbapi.event_upsert(self.dialect), done.params)
        if done.ends_action:
            session.execute(dbapi.finish_action_statement(False), done.params)
        done.written()
