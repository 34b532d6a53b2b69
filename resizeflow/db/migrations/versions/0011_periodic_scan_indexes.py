"""indexes for beat's periodic passes: open journal rows, migrations by status

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 09:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# The statuses of a step that may still run (all but resizeflow.states.JOURNAL_ENDED).
_OPEN = "status IN ('pending', 'running', 'retrying')"


def upgrade() -> None:
    # The reconciler reads the journal of the workflows still going; without
    # this partial index it filtered every row ever written to find them.
    op.create_index(
        "ix_step_journal_open",
        "step_journal",
        ["migration_id"],
        postgresql_where=sa.text(_OPEN),
        sqlite_where=sa.text(_OPEN),
    )
    # Auto-confirm (finished, older than the window) and the cleanup of
    # errored migrations look migrations up by status.
    op.create_index("ix_migrations_status_updated", "migrations", ["status", "updated_at"])


def downgrade() -> None:
    op.drop_index("ix_migrations_status_updated", table_name="migrations")
    op.drop_index("ix_step_journal_open", table_name="step_journal")
