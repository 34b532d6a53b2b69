"""Run every phase in order, clean up whatever was started, and save the results.

The main stack (two hosts by default, PostgreSQL) runs the baseline, the
throughput and latency phases, the TaskFlow peer and the profile pass, with
its workers' RSS sampled throughout. Scaling and database work start stacks of their own. One
private redis-server serves them all, and every PostgreSQL database and
temporary directory is removed at the end, also on Ctrl-C or failure.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from bench import dbwork, monitor, phases, scaling, taskflow_peer
from bench.stack import DEFAULT_PG_ADMIN, BenchShared, stack
from resizeflow.devstack.supervisor import Supervisor

DEFAULT_HOST_GRID = (1, 2, 4, 8)
DEFAULT_LOAD_GRID = (100, 500)
FULL_LOAD_GRID = (100, 500, 2000)

# A phase's name and the results so far: called as each phase ends.
Show = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class BenchConfig:
    """What to run. The default is meant to finish in under 8 minutes on two cores.

    The default scaling grid is the host sweep at ``host_grid_n`` workflows
    plus the load sweep on ``hosts`` hosts; ``cross`` runs every pair instead.
    """

    n: int = 200
    hosts: int = 2
    latency_samples: int = 30
    host_grid: tuple[int, ...] = DEFAULT_HOST_GRID
    host_grid_n: int = 100
    load_grid: tuple[int, ...] = DEFAULT_LOAD_GRID
    cross: bool = False
    db_n: int = 20
    db_backends: tuple[str, ...] = ("postgresql", "sqlite")
    concurrency: int = 4
    # Batches per flow in the baseline, throughput and TaskFlow phases; the best counts.
    rounds: int = 2
    profile: bool = True
    # The same flows on OpenStack TaskFlow's worker-based engine (bench.taskflow_peer):
    # workflows at once per engine, and TaskFlow's single workflows per flow.
    peer: bool = True
    peer_n: int = 50
    peer_samples: int = 10
    pg_admin_url: str = DEFAULT_PG_ADMIN
    results_dir: Path = Path("bench/results")
    timeout: float = 900.0
    keep: bool = False

    @classmethod
    def quick(cls, **overrides: Any) -> BenchConfig:
        """Every ratio of the default run, at small sizes and one round each,
        without the profile, the database counts and the scaling grid: under
        3 minutes on two cores."""
        sizes: dict[str, Any] = {
            "n": 40,
            "latency_samples": 8,
            "db_backends": (),
            "peer_n": 20,
            "peer_samples": 5,
            "rounds": 1,
            "profile": False,
            "host_grid": (),
            "load_grid": (),
        }
        return cls(**{**sizes, **overrides})

    def grid(self) -> list[tuple[int, int]]:
        """The (hosts, N) scaling points, in run order."""
        if self.cross:
            return [(h, n) for n in self.load_grid for h in self.host_grid]
        points = [(h, self.host_grid_n) for h in self.host_grid]
        points += [(self.hosts, n) for n in self.load_grid]
        return list(dict.fromkeys(points))


def machine() -> dict[str, Any]:
    """The machine the figures came from: cores, CPU model, RAM, Python, kernel."""
    cpu = ""
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "ram_gb": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    def handler(_sig: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _quiet(_phase: str, _results: dict[str, Any]) -> None:
    pass


@dataclass
class Run:
    config: BenchConfig
    log: Callable[[str], None]
    prefix: Path  # results/<stamp>: the JSON, PNG and profile share it
    results: dict[str, Any] = field(default_factory=dict)
    show: Show = _quiet

    def main_stack(self, shared: BenchShared) -> None:
        cfg = self.config
        # The TaskFlow peer needs its workers in the same processes (see bench.taskflow_worker).
        worker = "bench.taskflow_worker" if cfg.peer else "bench.worker"
        with stack(
            shared, "main", hosts=cfg.hosts, concurrency=cfg.concurrency, worker=worker
        ) as st:
            sampler = monitor.RssSampler(st.worker_pids())
            sampler.start()
            self.log(f"baseline: bare chains of 4 and 5 no-op steps, {cfg.n} at a time")
            base = phases.baseline(st, cfg.n, cfg.timeout, cfg.rounds)
            self.results["baseline"] = base
            tp = phases.throughput(st, cfg.n, base, cfg.timeout, self.log, cfg.rounds)
            servers = tp.pop("servers")
            self.results["throughput"] = tp
            self.show("throughput", self.results)
            self.results["latency"] = phases.latency(st, cfg.latency_samples, cfg.timeout, self.log)
            self.show("latency", self.results)
            if cfg.peer:
                self.results["taskflow"] = taskflow_peer.peer_phase(
                    st, cfg.peer_n, cfg.peer_samples, cfg.pg_admin_url, cfg.timeout, self.log
                )
                self.results["vs_taskflow"] = taskflow_peer.ratios(self.results)
                self.show("taskflow", self.results)
            if cfg.profile:
                self.log(f"profile: py-spy on every worker, {cfg.n} confirms")
                self.results["profile"] = phases.profile_pass(st, servers, self.prefix, cfg.timeout)
                self.show("profile", self.results)
            peaks = sampler.stop()
            ends = scaling.done_times(st)
            self.results["main_workers"] = {
                "workflows_run": len(ends),
                "peak_rss_mb": {h: round(kb / 1024, 1) for h, kb in peaks.items()},
                "rss_growth": monitor.rss_growth(sampler, ends, 500, 2000),
            }

    def run(self, shared: BenchShared) -> None:
        cfg = self.config
        self.main_stack(shared)
        probe_dir = shared.root / "probe"
        self.results["database"] = {
            backend: dbwork.database_work(
                shared, backend, cfg.db_n, probe_dir, cfg.timeout, self.log
            )
            for backend in cfg.db_backends
        }
        if "postgresql" in self.results["database"]:
            overhead(self.results)
            self.show("database", self.results)
        points: list[dict[str, Any]] = []
        self.results["scaling"] = points
        for h, n in cfg.grid():
            points.append(
                scaling.scaling_point(shared, h, n, cfg.concurrency, cfg.timeout, self.log)
            )
            self.show("scaling point", self.results)


def overhead(results: dict[str, Any]) -> None:
    """Per step: its journal time minus the driver's own time, counted by the probe."""
    counted = results["database"]["postgresql"]["per_step"]
    for lat in results["latency"].values():
        for name, row in lat["per_step"].items():
            driver = counted.get(name, {}).get("driver_ms", 0.0)
            row["driver_ms"] = driver
            row["overhead_ms"] = round(row["step_ms"] - driver, 2)


def run_bench(
    config: BenchConfig, log: Callable[[str], None], show: Show = _quiet
) -> tuple[dict[str, Any], Path]:
    """Run the benchmark; returns the results and the path of the JSON written.

    ``show`` is called with each phase's name as soon as the phase ends.
    """
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    config.results_dir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="resizeflow-bench-"))
    shared = BenchShared(
        root=root, pg_admin_url=config.pg_admin_url, sup=Supervisor(state_dir=root, env={})
    )
    run = Run(config, log, config.results_dir / stamp, show=show)
    started = time.monotonic()
    try:
        with _sigterm_as_interrupt():
            shared.start()
            run.run(shared)
    finally:
        shared.sup.stop_all()
        if not config.keep:
            shutil.rmtree(root, ignore_errors=True)
    config_dict = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}
    config_dict.pop("pg_admin_url")
    results = {
        "started": stamp,
        "duration_s": round(time.monotonic() - started, 1),
        "machine": machine(),
        "config": config_dict,
        **run.results,
    }
    from bench import report

    results["targets"] = report.targets(results)
    path = config.results_dir / f"{stamp}.json"
    path.write_text(json.dumps(results, indent=1))
    return results, path
