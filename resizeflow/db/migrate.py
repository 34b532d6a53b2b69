"""Schema upgrades with Alembic, and the seed data every cloud starts with."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from resizeflow.db.models import Flavor
from resizeflow.db.session import Database

MIGRATIONS = Path(__file__).parent / "migrations"

# Nova's classic default flavors: (id, name, vcpus, memory_mb, root_gb).
CLASSIC_FLAVORS = (
    (1, "m1.tiny", 1, 512, 1),
    (2, "m1.small", 1, 2048, 20),
    (3, "m1.medium", 2, 4096, 40),
    (4, "m1.large", 4, 8192, 80),
    (5, "m1.xlarge", 8, 16384, 160),
)


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(database: Database, revision: str = "head") -> None:
    """Create or upgrade the schema, then seed the classic flavors if missing."""
    url = make_url(database.url)
    if url.get_backend_name() == "sqlite" and url.database:
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    with database.engine.begin() as conn:
        cfg = alembic_config(database.url)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    seed_flavors(database)


def seed_flavors(database: Database) -> None:
    with database.transaction() as s:
        have = set(s.scalars(select(Flavor.id)))
        for fid, name, vcpus, ram, disk in CLASSIC_FLAVORS:
            if fid not in have:
                s.add(
                    Flavor(
                        id=fid,
                        flavorid=str(fid),
                        name=name,
                        vcpus=vcpus,
                        memory_mb=ram,
                        root_gb=disk,
                    )
                )
        if not database.is_sqlite:
            # Explicit ids do not advance PostgreSQL's sequence; move it past them
            # so that flavors created later get fresh ids.
            s.flush()
            s.execute(
                text(
                    "SELECT setval(pg_get_serial_sequence('flavors', 'id'), "
                    "(SELECT max(id) FROM flavors))"
                )
            )
