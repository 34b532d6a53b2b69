"""What a delete must know of the server's newest migration: whether its workflow
is still live, and how to end it."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from resizeflow.db import journal
from resizeflow.db.models import Migration, utcnow
from resizeflow.states import JOURNAL_ENDED, JournalStatus, MigrationStatus, check_migration


def live_migration_of(session: Session, uuid: str) -> Migration | None:
    """The server's newest migration if its workflow is not over (or errored).

    NOTE: a migration is ``confirmed`` or ``reverted`` one step before its
    flow ends (finish_confirm, finish_revert): with such a step still open
    the workflow is live.
    """
    mig = session.scalars(
        select(Migration)
        .where(Migration.instance_uuid == uuid)
        .order_by(Migration.id.desc())
        .limit(1)
        .with_for_update()
    ).first()
    if mig is None or mig.status == MigrationStatus.FAILED:
        return None
    if mig.status in (MigrationStatus.CONFIRMED, MigrationStatus.REVERTED) and not open_rows(
        session, mig
    ):
        return None
    return mig


def end_for_delete(session: Session, mig: Migration) -> None:
    """End the migration's workflow for a delete: abort what is left, move it to error."""
    for row in journal.rows(session, mig.id):
        if row.status not in JOURNAL_ENDED:
            journal.end(row, JournalStatus.ABORTED, "the server was deleted")
    if mig.status not in (MigrationStatus.ERROR, MigrationStatus.CONFIRMED):
        mig.status = check_migration(mig.status, MigrationStatus.ERROR)
        mig.updated_at = utcnow()


def open_rows(session: Session, mig: Migration) -> bool:
    return any(r.status not in JOURNAL_ENDED for r in journal.rows(session, mig.id))


def in_flight(session: Session, mig: Migration) -> bool:
    """Whether a confirm or revert of this migration has been planned and not ended."""
    return any(
        r.status not in JOURNAL_ENDED and r.flow in ("confirm", "revert")
        for r in journal.rows(session, mig.id)
    )
