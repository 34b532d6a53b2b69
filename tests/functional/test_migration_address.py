"""A compute host advertises its migration address in its service record."""

from __future__ import annotations

import pytest

from resizeflow.db import services
from resizeflow.db.session import Database
from tests.support.stack import Stack


def test_advertised_address_is_what_other_hosts_copy_to(database: Database) -> None:
    with database.transaction() as s:
        # Nothing advertised (an older worker, or none yet): the host name.
        assert services.migration_address(s, "cn-1") == "cn-1"
        with pytest.raises(LookupError, match="cn-1"):
            services.advertise_migration_address(s, "cn-1", "192.0.2.11")
        services.heartbeat(s, "cn-1", "compute.cn-1")
        assert services.migration_address(s, "cn-1") == "cn-1"
        services.advertise_migration_address(s, "cn-1", "192.0.2.11")
    with database.transaction() as s:
        assert services.migration_address(s, "cn-1") == "192.0.2.11"
        # A heartbeat keeps it; another host's is its own.
        services.heartbeat(s, "cn-1", "compute.cn-1")
        services.heartbeat(s, "cn-2", "compute.cn-2")
    with database.transaction() as s:
        assert services.migration_address(s, "cn-1") == "192.0.2.11"
        assert services.migration_address(s, "cn-2") == "cn-2"


def test_a_running_worker_has_advertised_its_address(rf: Stack) -> None:
    with rf.db.snapshot() as s:
        for host in rf.hosts:
            svc = services.get(s, host)
            assert svc is not None
            # Its own setting, defaulting to its name, written by the worker itself.
            assert svc.migration_address == host
