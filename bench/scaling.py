"""Scaling: a fresh stack per (hosts, load) point, and what its workers cost.

Each point boots N servers on H hosts, resizes them (untimed), then confirms
all N at once. It reports the wall time and the workers' CPU time per
workflow next to N bare chains of 4 on the same stack, and the workers'
memory: peak RSS and its growth between the 500th and 2000th workflow.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from bench import drive, monitor
from bench.phases import Log, rates
from bench.stack import BenchShared, BenchStack, stack
from resizeflow.db.models import StepJournal
from resizeflow.states import JournalStatus


def done_times(st: BenchStack) -> list[float]:
    """When each workflow (resize, confirm or revert chain) of the stack finished."""
    ends: dict[tuple[int, str], float] = {}
    open_: set[tuple[int, str]] = set()
    with st.db.snapshot() as s:
        rows = s.execute(
            select(
                StepJournal.migration_id,
                StepJournal.flow,
                StepJournal.status,
                StepJournal.finished_at,
            )
        ).all()
    for mig, flow, status, finished in rows:
        if mig is None:
            continue  # an instance operation: the scaling phase drives resizes only
        key = (mig, flow)
        if status != JournalStatus.DONE or finished is None:
            open_.add(key)
        else:
            ends[key] = max(ends.get(key, 0.0), drive.epoch(finished))
    return [t for k, t in ends.items() if k not in open_]


def scaling_point(
    shared: BenchShared, hosts: int, n: int, concurrency: int, timeout: float, log: Log
) -> dict[str, Any]:
    """A fresh stack of ``hosts`` workers: ``n`` confirms at once, the cost of each."""
    log(f"scaling: H={hosts} N={n}")
    with stack(shared, f"scale-h{hosts}-n{n}", hosts=hosts, concurrency=concurrency) as st:
        sampler = monitor.RssSampler(st.worker_pids())
        sampler.start()
        servers = drive.create_servers(st, n, timeout)
        drive.resize_all(st, servers, "2", timeout)
        pids = list(st.worker_pids().values())
        cpu0 = monitor.cpu_seconds(pids)
        res = rates(drive.finish(st, servers, "confirm", timeout), 4)
        cpu1 = monitor.cpu_seconds(pids)
        bare = rates(drive.bare_batch(st, 4, n, timeout), 4)
        bare_cpu = monitor.cpu_seconds(pids) - cpu1
        peaks = sampler.stop()
        ends = done_times(st)
    return {
        "hosts": hosts,
        **res,
        "cost_ms_per_workflow": round(1000 * res["wall_s"] / n, 2),
        "worker_cpu_ms_per_workflow": round(1000 * (cpu1 - cpu0) / n, 2),
        "bare_worker_cpu_ms_per_workflow": round(1000 * bare_cpu / n, 2),
        "bare_workflows_per_s": bare["workflows_per_s"],
        "ratio_to_baseline": round(res["workflows_per_s"] / bare["workflows_per_s"], 3),
        "workflows_run": len(ends),
        "peak_rss_mb": {h: round(kb / 1024, 1) for h, kb in peaks.items()},
        "rss_growth": monitor.rss_growth(sampler, ends, 500, 2000),
    }
