"""The read side of the compute service layer: servers, flavors, migrations,
instance actions, services and hypervisors.

Each query runs in a read-only snapshot, applies the same visibility rules as
the service layer (another project's server does not exist: see
:mod:`resizeflow.db.instances`) and returns the plain frozen values of
:mod:`~resizeflow.compute.queries.infos`, so the API and the CLI never hold ORM
rows. Each resource's queries live in a module of their own; :class:`Queries`
gathers them into the one object the API and the CLI are given.
"""

from __future__ import annotations

from resizeflow.compute.queries.actions import ActionQueries
from resizeflow.compute.queries.flavors import FlavorQueries
from resizeflow.compute.queries.hosts import HostQueries
from resizeflow.compute.queries.migrations import MigrationQueries
from resizeflow.compute.queries.servers import ServerQueries


class Queries(ServerQueries, FlavorQueries, MigrationQueries, ActionQueries, HostQueries):
    """Every resource's queries, over one settings and one database."""
