"""The measurements on the main stack: baseline, throughput, latency and the profile.

Each phase takes a running :class:`~bench.stack.BenchStack` and returns
plain dicts that go into the result JSON as they are. Scaling and database
work start stacks of their own (:mod:`~bench.scaling`,
:mod:`~bench.dbwork`).
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import drive
from bench.profile import Recording, summarize
from bench.stack import BenchStack

Log = Callable[[str], None]


def pct(values: list[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))]


def rates(batch: drive.Batch, steps: int) -> dict[str, float]:
    n = len(batch.started)
    return {
        "n": n,
        "steps": steps,
        "wall_s": round(batch.wall, 3),
        "workflows_per_s": round(n / batch.wall, 2),
        "steps_per_s": round(n * steps / batch.wall, 1),
        "errors": batch.errors,
    }


def baseline(st: BenchStack, n: int, timeout: float, rounds: int = 2) -> dict[str, Any]:
    """Bare chains of 4 and 5 no-op steps, ``n`` at a time, on the stack's host queues.

    The best of ``rounds`` batches counts: the floor is what Celery can do,
    and on a shared machine a slow batch says more about the neighbours.
    """
    drive.bare_batch(st, 4, min(n, 20), timeout)  # warm the workers and connections
    out: dict[str, Any] = {}
    for k in (4, 5):
        tries = [rates(drive.bare_batch(st, k, n, timeout), k) for _ in range(rounds)]
        best = max(tries, key=lambda r: r["workflows_per_s"])
        out[f"bare{k}"] = {**best, "rounds_workflows_per_s": [r["workflows_per_s"] for r in tries]}
    return out


# The flavor each round resizes to before its confirms, then before its
# reverts: always up, since a resize may not shrink the disk, and a revert
# leaves the server where it was. The profile pass resizes to m1.large after.
THROUGHPUT_ROUNDS = ((("2", "confirm"), ("3", "revert")), (("3", "confirm"), ("4", "revert")))


def throughput(
    st: BenchStack, n: int, base: dict[str, Any], timeout: float, log: Log, rounds: int = 2
) -> dict[str, Any]:
    """``n`` confirms at once, then ``n`` reverts at once, against the baseline.

    Like the baseline, the best of ``rounds`` (at most two) counts, so that
    both sides of the ratio had the same chances on a shared machine.
    """
    servers = drive.create_servers(st, n, timeout)
    tries: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for number, pairs in enumerate(THROUGHPUT_ROUNDS[:rounds], 1):
        for flavor, flow in pairs:
            log(f"throughput, round {number}: resizing {n} servers, then {n} {flow}s at once")
            drive.resize_all(st, servers, flavor, timeout)
            tries[flow].append(rates(drive.finish(st, servers, flow, timeout), drive.STEPS[flow]))
    out: dict[str, Any] = {"servers": servers}
    for flow, results in tries.items():
        best = max(results, key=lambda r: r["workflows_per_s"])
        bare = base[f"bare{drive.STEPS[flow]}"]
        out[flow] = {
            **best,
            "rounds_workflows_per_s": [r["workflows_per_s"] for r in results],
            "errors": sum(r["errors"] for r in results),
            "ratio_to_baseline": round(best["workflows_per_s"] / bare["workflows_per_s"], 3),
        }
    return out


def _one_bare(st: BenchStack, length: int, timeout: float) -> float:
    batch = drive.bare_batch(st, length, 1, timeout)
    return batch.latencies()[0]


def _per_step(st: BenchStack, ids: list[int], flow: str) -> dict[str, dict[str, float]]:
    took: dict[str, list[float]] = defaultdict(list)
    hop: dict[str, list[float]] = defaultdict(list)
    prev: dict[int, float] = {}
    for r in drive.step_rows(st, ids, flow):
        if r.started_at is None or r.finished_at is None or r.migration_id is None:
            continue
        name = r.step  # the step's task name, as the probe counts it
        took[name].append(drive.epoch(r.finished_at) - drive.epoch(r.started_at))
        if r.migration_id in prev:
            hop[name].append(drive.epoch(r.started_at) - prev[r.migration_id])
        prev[r.migration_id] = drive.epoch(r.finished_at)
    return {
        name: {
            "step_ms": round(1000 * statistics.median(v), 2),
            "hop_ms": round(1000 * statistics.median(hop[name]), 2) if hop[name] else 0.0,
        }
        for name, v in took.items()
    }


def latency(st: BenchStack, samples: int, timeout: float, log: Log) -> dict[str, Any]:
    """One workflow at a time: API call to terminal state, against one bare chain."""
    servers = drive.create_servers(st, samples, timeout)
    out: dict[str, Any] = {}
    for flavor, flow in (("2", "confirm"), ("3", "revert")):
        steps = drive.STEPS[flow]
        log(f"latency: {samples} single {flow}s and {samples} single bare chains of {steps}")
        drive.resize_all(st, servers, flavor, timeout)
        started: dict[int, float] = {}
        call = st.api.confirm_resize if flow == "confirm" else st.api.revert_resize
        for u in servers:
            t = time.time()
            mig = call(drive.caller(), u)
            started[mig] = t
            drive.wait_flow(st, [mig], flow, timeout, poll=0.005)
        lat = drive.collect(st, flow, started).latencies()
        bare = [_one_bare(st, steps, timeout) for _ in range(samples)]
        p50, bare50 = statistics.median(lat), statistics.median(bare)
        out[flow] = {
            "n": len(lat),
            "steps": steps,
            "p50_ms": round(1000 * p50, 1),
            "p95_ms": round(1000 * pct(lat, 95), 1),
            "p99_ms": round(1000 * pct(lat, 99), 1),
            "bare_p50_ms": round(1000 * bare50, 1),
            "bare_p99_ms": round(1000 * pct(bare, 99), 1),
            "ratio_to_bare": round(p50 / bare50, 2),
            "overhead_per_step_vs_bare_ms": round(1000 * (p50 - bare50) / steps, 1),
            "per_step": _per_step(st, list(started), flow),
        }
    return out


def profile_pass(
    st: BenchStack, servers: list[str], prefix: Path, timeout: float
) -> dict[str, Any]:
    """Confirm every server again with py-spy on each worker; rank hotspots.

    Only the confirms are sampled: the step machinery they exercise is the
    same for every flow, and the pass has to fit the default run's budget.

    There are two recordings per worker: ``busy`` (every non-idle thread, so waits on
    the database count) and ``gil`` (only samples holding the GIL: CPU).
    """
    raws: dict[str, list[Path]] = {"busy": [], "gil": []}
    errors: list[str] = []
    for flavor, flow in (("4", "confirm"),):  # see THROUGHPUT_ROUNDS
        drive.resize_all(st, servers, flavor, timeout)
        recs = [
            (
                kind,
                Recording(pid, _profile_path(prefix, f"{kind}-{flow}-{host}"), gil=kind == "gil"),
            )
            for host, pid in st.worker_pids().items()
            for kind in raws
        ]
        try:
            if not all(r.start() for _, r in recs):
                return {"error": recs[0][1].error}
            time.sleep(1.0)  # py-spy attaches asynchronously
            drive.finish(st, servers, flow, timeout)
        finally:
            for _, r in recs:
                r.stop()
        for kind, r in recs:
            if r.error:
                errors.append(r.error)
            else:
                raws[kind].append(r.out)
    out: dict[str, Any] = {"errors": errors}
    for kind, paths in raws.items():
        if not paths:
            continue
        merged = _profile_path(prefix, kind)
        merged.write_text("".join(p.read_text(errors="replace") for p in paths))
        for p in paths:
            p.unlink()
        out[kind] = {"raw": merged.name, **summarize(merged)}
    return out


def _profile_path(prefix: Path, what: str) -> Path:
    return prefix.with_name(f"{prefix.name}-pyspy-{what}.txt")
