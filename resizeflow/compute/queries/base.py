"""What every resource's queries share: the settings and the database they read."""

from __future__ import annotations

from resizeflow.conf import Settings
from resizeflow.db.session import Database


class Reader:
    """Queries of one resource, each in a read-only snapshot."""

    def __init__(self, settings: Settings, database: Database) -> None:
        self.settings = settings
        self.db = database
