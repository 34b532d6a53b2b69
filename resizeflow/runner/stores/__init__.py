"""Journal stores: the step journal as the step runner uses it, one per database backend."""

from __future__ import annotations

from resizeflow.runner.stores.base import JournalStore, Opening
from resizeflow.runner.stores.postgresql import PostgresStore
from resizeflow.runner.stores.sqlite import SqliteStore
from resizeflow.steps.context import HostRuntime

__all__ = ["JournalStore", "Opening", "PostgresStore", "SqliteStore", "store_for"]


def store_for(runtime: HostRuntime) -> JournalStore:
    """The store of ``runtime``'s database."""
    if runtime.db.is_sqlite:
        return SqliteStore(runtime)
    return PostgresStore(runtime)
