"""The Alembic migration against real SQLite and PostgreSQL: schema, seed data, idempotence."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select, text

from resizeflow.db.migrate import CLASSIC_FLAVORS, MIGRATIONS, upgrade
from resizeflow.db.models import Base, Flavor
from resizeflow.db.session import Database
from resizeflow.openstack.network import default_network_id
from tests.support.stack import PG_ADMIN_URL, create_pg_database, drop_pg_database, require

# The newest revision: the one the head of the migration chain names.
HEAD = max(p.name.split("_", 1)[0] for p in MIGRATIONS.glob("versions/[0-9]*.py"))

NOVA_FLAVORS = [
    (1, "m1.tiny", 1, 512, 1),
    (2, "m1.small", 1, 2048, 20),
    (3, "m1.medium", 2, 4096, 40),
    (4, "m1.large", 4, 8192, 80),
    (5, "m1.xlarge", 8, 16384, 160),
]


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    require(PG_ADMIN_URL, 5432, "PostgreSQL")
    url = create_pg_database()
    yield url
    drop_pg_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """An empty database: a new SQLite file, or an emptied schema in the module's PG database."""
    if request.param == "sqlite":
        db = Database(f"sqlite:///{tmp_path / 'rf.sqlite'}")
    else:
        db = Database(request.getfixturevalue("pg_url"))
        with db.engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    yield db
    db.dispose()


def snapshot(db: Database) -> dict[str, Any]:
    insp = inspect(db.engine)
    with db.engine.connect() as conn:
        flavors = conn.execute(text("SELECT * FROM flavors ORDER BY id")).all()
        version = conn.execute(text("SELECT version_num FROM alembic_version")).all()
    return {
        "tables": {
            t: (
                [(c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(t)],
                sorted((i["name"], tuple(i["column_names"])) for i in insp.get_indexes(t)),
                sorted(str(u["column_names"]) for u in insp.get_unique_constraints(t)),
            )
            for t in insp.get_table_names()
        },
        "flavors": [tuple(r) for r in flavors],
        "version": [tuple(r) for r in version],
    }


def test_upgrade_creates_schema_and_seeds_flavors(database: Database) -> None:
    assert inspect(database.engine).get_table_names() == []
    upgrade(database)
    tables = set(inspect(database.engine).get_table_names())
    assert tables == set(Base.metadata.tables) | {"alembic_version"}
    with database.transaction() as s:
        flavors = s.scalars(select(Flavor).order_by(Flavor.id)).all()
        got = [(f.id, f.name, f.vcpus, f.memory_mb, f.root_gb) for f in flavors]
        assert got == NOVA_FLAVORS == list(CLASSIC_FLAVORS)
        assert [f.flavorid for f in flavors] == ["1", "2", "3", "4", "5"]
        assert all(f.is_public and not f.disabled for f in flavors)
        assert all((f.ephemeral_gb, f.swap) == (0, 0) for f in flavors)


def test_upgrade_twice_changes_nothing(database: Database) -> None:
    upgrade(database)
    before = snapshot(database)
    upgrade(database)
    assert snapshot(database) == before
    assert before["version"] == [(HEAD,)]
    assert len(before["flavors"]) == 5


def test_migration_matches_models(database: Database) -> None:
    upgrade(database)
    with database.engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
        )
    assert diff == []


def test_new_flavor_gets_the_next_id(database: Database) -> None:
    upgrade(database)
    with database.transaction() as s:
        flavor = Flavor(flavorid="custom", name="c1.big", vcpus=16, memory_mb=32768, root_gb=320)
        s.add(flavor)
        s.flush()
        assert flavor.id == 6


def test_cli_db_upgrade_creates_sqlite_file(tmp_path: Path) -> None:
    state = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESIZEFLOW_")}
    env["RESIZEFLOW_STATE_DIR"] = str(state)
    proc = subprocess.run(
        [sys.executable, "-m", "resizeflow", "db", "upgrade"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    path = state / "resizeflow.sqlite"
    assert path.is_file()
    assert str(path) in proc.stdout
    db = Database(f"sqlite:///{path}")
    try:
        with db.transaction() as s:
            assert s.scalars(select(Flavor.name).order_by(Flavor.id)).all()[-1] == "m1.xlarge"
    finally:
        db.dispose()


def test_0015_turns_port_network_names_into_networks(database: Database) -> None:
    """A port recorded before 0015 names its network; the upgrade makes that network, with
    a subnet its address is in, points the port at it and binds it to its server's host."""
    upgrade(database, "0014")
    with database.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO instances (uuid, display_name, project_id, user_id, host, node, "
                "flavor, system_metadata, vm_state, power_state, locked, created_at, "
                "updated_at, deleted) VALUES ('i-1', 'vm', 'p1', 'alice', 'hostA', 'hostA', "
                "'{}', '{}', 'active', 1, :f, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, :f)"
            ),
            {"f": False},
        )
        conn.execute(
            text(
                "INSERT INTO ports (id, instance_uuid, network, mac_address, ip_address) "
                "VALUES ('port-1', 'i-1', 'private', 'fa:16:3e:00:00:01', '10.0.0.2')"
            )
        )
    upgrade(database)
    with database.engine.connect() as conn:
        [(net_id, name, vni)] = conn.execute(
            text("SELECT id, name, segmentation_id FROM networks")
        ).all()
        [(sub_net, cidr, gateway)] = conn.execute(
            text("SELECT network_id, cidr, gateway_ip FROM subnets")
        ).all()
        [port] = conn.execute(
            text(
                "SELECT network_id, subnet_id, device_id, device_owner, binding_host_id, "
                "ip_address FROM ports WHERE id = 'port-1'"
            )
        ).all()
        subnet_id = conn.execute(text("SELECT id FROM subnets")).scalar_one()
    assert name == "private" and vni >= 1001
    # The default network the API would make: a boot after the upgrade finds it.
    assert net_id == default_network_id()
    assert (sub_net, cidr, gateway) == (net_id, "10.0.0.0/24", "10.0.0.1")
    assert tuple(port) == (net_id, subnet_id, "i-1", "compute:nova", "hostA", "10.0.0.2")
