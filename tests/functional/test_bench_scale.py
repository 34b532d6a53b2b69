"""``resizeflow bench --scale`` at a tiny size, and the indexes its scans showed were missing."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from bench import scale, scaleload
from resizeflow import periodic, recovery
from resizeflow.celery_app import make_app
from resizeflow.compute.api import ComputeAPI
from resizeflow.conf import Settings
from resizeflow.db.migrate import upgrade
from resizeflow.db.session import Database
from tests.support.stack import PG_ADMIN_URL, create_pg_database, drop_pg_database, service_up

pytestmark = pytest.mark.services


def _need_postgres() -> None:
    if not service_up(PG_ADMIN_URL, 5432):
        pytest.skip("needs PostgreSQL")


def test_scale_bench_at_a_tiny_size(tmp_path: Path) -> None:
    _need_postgres()
    if shutil.which("redis-server") is None:
        pytest.skip("needs redis-server")
    cfg = scale.ScaleConfig(
        hosts=12,
        migrations=600,
        queue_points=(4, 12, 50),  # 50 is above the hosts, so it is left out
        consumers=2,
        idle_window=1.0,
        repeats=1,
        brokers=("redis",),
        pg_admin_url=PG_ADMIN_URL,
        results_dir=tmp_path,
    )
    results, path = scale.run_scale(cfg, Console(file=(tmp_path / "out.txt").open("w")))
    saved = json.loads(path.read_text())
    assert saved["config"]["hosts"] == 12

    rows = saved["broker"]["redis"]
    assert [r["host_queues"] for r in rows] == [0, 4, 12]
    assert [r["consumer_processes"] for r in rows] == [0, 2, 2]
    # Only the bench's INFO connection before the consumers, theirs after.
    assert rows[0]["clients"] == 1 and rows[1]["clients"] > 1
    assert all(r["used_memory_mb"] > 0 for r in rows)
    assert all(r["consumer_rss_mb"] > 0 for r in rows[1:])
    assert rows[2]["commands_per_s"] > 0  # idle consumers still poll their queues

    db = saved["database"]
    shape = scaleload.Shape(12, 600)
    assert db["load"]["rows"]["migrations"] == 600
    assert db["load"]["rows"]["instances"] == shape.instances == 300
    assert db["load"]["rows"]["services"] == 12
    passes = db["passes"]
    # Every workflow in flight holds a live lease and no resize is due: the
    # passes find nothing to do, so their time is their scan.
    assert passes["reconciler"]["result"] == "0 re-driven"
    assert passes["auto-confirm"]["result"] == "0 confirmed, 0 other"
    assert passes["cleanup"]["result"] == "0 purged"
    # The ports were loaded densely from .2 up: the next boot gets the next address.
    first = int(ipaddress.IPv4Network(scaleload.FIXED_RANGE).network_address) + 2
    assert passes["IPAM: one port"]["result"] == str(ipaddress.IPv4Address(first + 300))
    for name, p in passes.items():
        assert p["median_ms"] >= p["best_ms"] > 0, name
        assert p["selects"] >= 1, name
        assert len(db["explain"][name]) == p["selects"]
        assert all(e["plan"] and e["execution_ms"] >= 0 for e in db["explain"][name])
    assert path.with_name(path.name.replace(".json", "-explain.txt")).stat().st_size > 0
    assert "database: one pass each" in (tmp_path / "out.txt").read_text()
    assert results["duration_s"] > 0


@pytest.fixture
def pg() -> Iterator[Database]:
    _need_postgres()
    url = create_pg_database()
    db = Database(url)
    try:
        upgrade(db)
        yield db
    finally:
        db.dispose()
        drop_pg_database(url)


def _index_scans(db: Database, run: object) -> set[str]:
    """The indexes the statements of ``run()`` use, with sequential scans forbidden.

    The tables here are empty, where any plan would do: forbidding sequential
    scans shows whether the statements can use an index at all, which for a
    partial index means their condition implies its predicate.
    """
    with scale._captured(db) as seen:
        run()  # type: ignore[operator]
    assert seen
    used = set()
    for sql, params in seen:
        plan = scale.explain(db, sql, params, setup=("SET LOCAL enable_seqscan = off",))
        used |= {s.split("(")[-1].rstrip(")") for s in plan["scans"] if "(" in s}
    return used


def test_beats_scans_use_their_indexes(pg: Database, tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"RESIZEFLOW_DATABASE_URL": pg.url, "RESIZEFLOW_BROKER_URL": "redis://127.0.0.1:6379/0"},
        state_dir=tmp_path,
    )
    app = make_app(settings)
    api = ComputeAPI(settings, pg, app)

    def reconcile_scan() -> None:
        with pg.snapshot() as s:
            recovery.stalled(s, settings, now=dt.datetime(2026, 1, 1))

    assert "ix_step_journal_open" in _index_scans(pg, reconcile_scan)
    assert "ix_migrations_status_updated" in _index_scans(
        pg, lambda: periodic.confirm_unconfirmed_resizes(api, 60)
    )
