"""Database work: statements and round trips per step, on PostgreSQL and SQLite.

The stack runs instrumented workers (:mod:`bench.probe`) that count
per task; this module drives the workflows and adds the counts up.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench import drive
from bench.phases import Log
from bench.stack import BenchShared, stack
from resizeflow import flows


def database_work(
    shared: BenchShared, backend: str, n: int, probe_dir: Path, timeout: float, log: Log
) -> dict[str, Any]:
    """Queries and round trips per step, counted inside instrumented workers."""
    log(f"database work: {n} resize+confirm and resize+revert on {backend}, counted")
    out_dir = probe_dir / backend
    out_dir.mkdir(parents=True)
    with stack(shared, f"db-{backend}", hosts=2, backend=backend, probe_out=out_dir) as st:
        servers = drive.create_servers(st, n, timeout)
        # One at a time, as in the latency phase, so the driver's time is not
        # inflated by contention and can be subtracted from the latency's steps.
        for flavor, flow in (("2", "confirm"), ("3", "revert")):
            drive.resize_all(st, servers, flavor, timeout)
            for u in servers:
                drive.finish(st, [u], flow, timeout, poll=0.005)
    totals: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    first_sql: dict[str, list[str]] = {}
    for f in out_dir.glob("*.json"):
        saved = json.loads(f.read_text())
        first_sql.update(saved["first_sql"])
        for task, counts in saved["totals"].items():
            for k, v in counts.items():
                totals[task][k] += v
    per_step = {
        task: {
            "runs": int(c["runs"]),
            "statements": round(c["statements"] / c["runs"], 1),
            "round_trips": round(c["round_trips"] / c["runs"], 1),
            "transactions": round(c["transactions"] / c["runs"], 1),
            "driver_ms": round(1000 * c["driver_s"] / c["runs"], 2),
            "task_ms": round(1000 * c["task_s"] / c["runs"], 2),
            "first_run_sql": first_sql.get(task, []),
        }
        for task, c in sorted(totals.items())
        if c["runs"]
    }
    migration_steps = {
        step.task
        for flow in flows.FLOWS.values()
        if flow.subject is flows.Subject.MIGRATION
        for step in flow.steps
    }
    steps = [t for t in totals if t in migration_steps]
    runs = sum(totals[t]["runs"] for t in steps)
    if not runs:
        raise RuntimeError(f"the probe workers on {backend} counted no steps")
    return {
        "per_step": per_step,
        "steps_counted": int(runs),
        "avg_statements_per_step": round(sum(totals[t]["statements"] for t in steps) / runs, 1),
        "avg_round_trips_per_step": round(sum(totals[t]["round_trips"] for t in steps) / runs, 1),
    }
