"""A smoke run of ``resizeflow bench`` at tiny sizes: every phase, sane figures, no timings."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from bench import harness, plot, report
from tests.support.stack import PG_ADMIN_URL, service_up

pytestmark = pytest.mark.services


def test_bench_runs_every_phase(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None or not service_up(PG_ADMIN_URL, 5432):
        pytest.skip("needs redis-server and PostgreSQL")
    config = harness.BenchConfig(
        n=4,
        hosts=2,
        latency_samples=2,
        host_grid=(1, 2),
        host_grid_n=4,
        load_grid=(4, 6),
        db_n=2,
        profile=False,
        peer=False,  # test_quick_bench_runs_the_taskflow_peer covers it
        pg_admin_url=PG_ADMIN_URL,
        results_dir=tmp_path,
    )
    results, path = harness.run_bench(config, lambda _msg: None)

    saved = json.loads(path.read_text())
    for phase in ("baseline", "throughput", "latency", "scaling", "database", "targets"):
        assert phase in saved, phase
    for k in (4, 5):
        assert saved["baseline"][f"bare{k}"]["workflows_per_s"] > 0
    for flow, steps in (("confirm", 4), ("revert", 5)):
        tp, lat = saved["throughput"][flow], saved["latency"][flow]
        assert tp["n"] == 4 and tp["steps"] == steps and tp["errors"] == 0
        assert tp["workflows_per_s"] > 0 and tp["ratio_to_baseline"] > 0
        # The best of two rounds counts, as for the baseline.
        assert tp["workflows_per_s"] == max(tp["rounds_workflows_per_s"])
        assert len(tp["rounds_workflows_per_s"]) == 2
        assert 0 < lat["p50_ms"] <= lat["p95_ms"] <= lat["p99_ms"]
        assert len(lat["per_step"]) == steps
    assert [(p["hosts"], p["n"]) for p in saved["scaling"]] == [(1, 4), (2, 4), (2, 6)]
    for p in saved["scaling"]:
        assert p["errors"] == 0 and p["cost_ms_per_workflow"] > 0
        assert all(mb > 0 for mb in p["peak_rss_mb"].values())
    for backend in ("postgresql", "sqlite"):
        counted = saved["database"][backend]
        assert counted["avg_round_trips_per_step"] >= counted["avg_statements_per_step"] > 0
        assert counted["per_step"]["resizeflow.confirm.finish_confirm"]["first_run_sql"]
    # Every phase that ran is judged against its target from its own figure. Whether a
    # target was met is the bench's to report, on a machine of its own, not this run's.
    judged = {t["target"] for t in saved["targets"]}
    assert {
        "confirm throughput / bare chain of 4 (PostgreSQL)",
        "revert throughput / bare chain of 5 (PostgreSQL)",
        "confirm p50 latency / bare chain's",
        "revert p50 latency / bare chain's",
        "DB round trips per step (postgresql)",
        "DB round trips per step (sqlite)",
        "cost per workflow, N=6 vs N=4, H=2",
    } <= judged, sorted(judged)
    for target in saved["targets"]:
        sign, limit = target["limit"].split()
        bound = float(limit.rstrip("x%"))
        value = target["value"]
        assert value is not None, target
        assert target["met"] is (value <= bound if sign == "<=" else value >= bound), target

    png = plot.plot_scaling(results, path.with_suffix(".png"))
    assert png is not None and png.stat().st_size > 0
    out = io.StringIO()
    report.print_report(Console(file=out, width=120), results)
    assert "targets" in out.getvalue()


def test_quick_bench_runs_the_taskflow_peer(tmp_path: Path) -> None:
    """``resizeflow bench --quick`` at tiny sizes: TaskFlow's worker-based engine runs
    the same confirms and reverts on the same stack, and every phase's table is
    printed as soon as the phase ends, before the next phase starts."""
    if shutil.which("redis-server") is None or not service_up(PG_ADMIN_URL, 5432):
        pytest.skip("needs redis-server and PostgreSQL")
    from bench.cli import bench

    args = ["--quick", "-n", "3", "--latency-samples", "2"]
    args += ["--peer-workflows", "3", "--peer-samples", "2"]
    args += ["--pg-admin-url", PG_ADMIN_URL, "--results-dir", str(tmp_path)]
    result = CliRunner().invoke(bench, args, env={"COLUMNS": "200"}, catch_exceptions=False)
    assert result.exit_code == 0, result.output

    saved = json.loads(next(tmp_path.glob("*.json")).read_text())
    config = saved["config"]
    assert (config["n"], config["rounds"], config["peer_n"]) == (3, 1, 3)
    assert not config["profile"] and "profile" not in saved
    assert saved["database"] == {} and saved["scaling"] == []
    for flow, steps in (("confirm", 4), ("revert", 5)):
        peer = saved["taskflow"][flow]
        # Errors count engines that failed and migrations not confirmed/reverted after.
        assert peer["n"] == 3 and peer["steps"] == steps and peer["errors"] == 0
        assert peer["resizeflow_errors"] == 0 and peer["latency_n"] == 2
        assert peer["workflows_per_s"] > 0 and peer["resizeflow_workflows_per_s"] > 0
        assert len(saved["throughput"][flow]["rounds_workflows_per_s"]) == 1
        assert 0 < peer["p50_ms"] <= peer["p95_ms"] <= peer["p99_ms"]
        vs = saved["vs_taskflow"][flow]
        ours = peer["resizeflow_workflows_per_s"]
        assert vs["throughput"] == round(ours / peer["workflows_per_s"], 2)
        assert vs["p50"] == round(saved["latency"][flow]["p50_ms"] / peer["p50_ms"], 2)
    assert any("TaskFlow" in t["target"] for t in saved["targets"])

    out = result.output
    order = [
        "throughput: 3 at once",  # the table, printed when the throughput phase ends
        "latency: 2 single confirms",  # the next phase's first log line
        "latency: one at a time",
        "peer: 3 confirms at once",
        "TaskFlow's worker-based engine, same stack",
        "targets",
    ]
    where = [out.find(text) for text in order]
    assert -1 not in where and where == sorted(where), list(zip(order, where, strict=True))
    assert "÷ TaskFlow" in out


def test_profile_summary_ranks_our_functions_below_celery(tmp_path: Path) -> None:
    site = "/venv/lib/python3.11/site-packages"
    entry = "<module> (/src/resizeflow/__main__.py);run (/src/resizeflow/worker.py:9)"
    loop = f"{entry};Hub.create_loop ({site}/kombu/asynchronous/hub.py:1)"
    task = (
        f"_worker (/usr/lib/python3.11/concurrent/futures/thread.py:2);"
        f"trace_task ({site}/celery/app/trace.py:3);run_step (/src/resizeflow/tasks.py:4)"
    )
    raw = tmp_path / "gil.txt"
    raw.write_text(
        f"{loop} 30\n"
        f"{task};claim (/src/resizeflow/db/journal.py:5) 20\n"
        f"{task};execute ({site}/sqlalchemy/orm/session.py:6) 50\n"
    )
    from bench.profile import summarize

    summary = summarize(raw)
    assert summary["samples"] == 100
    ours = {r["function"]: r["pct"] for r in summary["resizeflow"]}
    # The entry point and the worker loop around Celery are not the steps' time.
    assert ours == {
        "run_step (resizeflow/tasks.py)": 70.0,
        "claim (resizeflow/db/journal.py)": 20.0,
    }
    assert {r["function"]: r["pct"] for r in summary["packages"]} == {
        "kombu": 30.0,
        "resizeflow": 20.0,
        "sqlalchemy": 50.0,
    }
