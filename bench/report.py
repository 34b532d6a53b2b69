"""The benchmark's targets, judged from a result dict, and the tables printed.

A target is a row: what was measured, the figure, the limit, and whether it
was met. A target the run had no data for (a phase skipped, too few
workflows) is reported as such rather than as met.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from resizeflow import flows


def _row(name: str, value: float | None, limit: float, unit: str, at_most: bool) -> dict[str, Any]:
    met = None if value is None else (value <= limit if at_most else value >= limit)
    sign = "<=" if at_most else ">="
    return {"target": name, "value": value, "limit": f"{sign} {limit:g}{unit}", "met": met}


def _rss(results: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """The RSS growth of the stack that ran the most workflows."""
    runs = [("main", results.get("main_workers", {}))]
    runs += [(f"H={p['hosts']} N={p['n']}", p) for p in results.get("scaling", [])]
    runs = [r for r in runs if r[1].get("rss_growth", {}).get("growth_pct") is not None]
    if not runs:
        return None, ""
    label, best = max(runs, key=lambda r: int(r[1]["rss_growth"]["to_workflow"]))
    return best["rss_growth"], label


def _cost(results: dict[str, Any]) -> tuple[float | None, str]:
    hosts = results.get("config", {}).get("hosts", 2)
    pts = sorted(
        (p for p in results.get("scaling", []) if p["hosts"] == hosts), key=lambda p: p["n"]
    )
    if len(pts) < 2:
        return None, ""
    lo, hi = pts[0], pts[-1]
    ratio = hi["cost_ms_per_workflow"] / lo["cost_ms_per_workflow"]
    return round(ratio, 2), f"N={hi['n']} vs N={lo['n']}, H={hosts}"


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    tp, lat, dbw = (results.get(k, {}) for k in ("throughput", "latency", "database"))
    for flow in ("confirm", "revert"):
        if flow in tp:
            rows.append(
                _row(
                    f"{flow} throughput / bare chain of {tp[flow]['steps']} (PostgreSQL)",
                    tp[flow]["ratio_to_baseline"],
                    0.5,
                    "x",
                    at_most=False,
                )
            )
    for flow, vs in results.get("vs_taskflow", {}).items():
        rows.append(
            _row(
                f"{flow} throughput / TaskFlow's (same stack)",
                vs["throughput"],
                2,
                "x",
                at_most=False,
            )
        )
    for flow in ("confirm", "revert"):
        if flow in lat:
            rows.append(
                _row(
                    f"{flow} p50 latency / bare chain's",
                    lat[flow]["ratio_to_bare"],
                    2,
                    "x",
                    at_most=True,
                )
            )
    for backend in ("postgresql", "sqlite"):
        if backend in dbw:
            rows.append(
                _row(
                    f"DB round trips per step ({backend})",
                    dbw[backend]["avg_round_trips_per_step"],
                    4,
                    "",
                    at_most=True,
                )
            )
    growth, label = _rss(results)
    if growth is not None:
        span = f"{growth['from_workflow']}->{growth['to_workflow']}"
        rows.append(
            _row(
                f"worker RSS growth, workflow {span} ({label})",
                round(growth["growth_pct"], 1),
                10,
                "%",
                at_most=True,
            )
        )
    ratio, span = _cost(results)
    if ratio is not None:
        rows.append(_row(f"cost per workflow, {span}", ratio, 1.2, "x", at_most=True))
    return rows


def _mark(met: bool | None) -> str:
    return {True: "[green]met[/green]", False: "[red]not met[/red]", None: "n/a"}[met]


def _table(title: str, *cols: str) -> Table:
    t = Table(title=title, title_justify="left")
    for i, col in enumerate(cols):
        t.add_column(col, justify="left" if i == 0 else "right")
    return t


def _throughput(console: Console, results: dict[str, Any]) -> None:
    base, tp = results["baseline"], results["throughput"]
    n = tp["confirm"]["n"]
    t = _table(f"throughput: {n} at once, PostgreSQL", "flow", "wf/s", "steps/s", "bare wf/s")
    t.add_column("ratio", justify="right")
    t.add_column("errors", justify="right")
    for flow in ("confirm", "revert"):
        r = tp[flow]
        bare = base[f"bare{r['steps']}"]["workflows_per_s"]
        t.add_row(
            f"{flow} ({r['steps']} steps)",
            f"{r['workflows_per_s']:.1f}",
            f"{r['steps_per_s']:.0f}",
            f"{bare:.1f}",
            f"{r['ratio_to_baseline']:.2f}x",
            str(r["errors"]),
        )
    console.print(t)


def _latency(console: Console, results: dict[str, Any]) -> None:
    lat = results["latency"]
    t = _table("latency: one at a time, API call to terminal state", "flow", "p50 ms", "p95 ms")
    for col in ("p99 ms", "bare p50 ms", "ratio", "overhead/step ms"):
        t.add_column(col, justify="right")
    for flow in ("confirm", "revert"):
        r = lat[flow]
        t.add_row(
            flow,
            f"{r['p50_ms']:.0f}",
            f"{r['p95_ms']:.0f}",
            f"{r['p99_ms']:.0f}",
            f"{r['bare_p50_ms']:.1f}",
            f"{r['ratio_to_bare']:.1f}x",
            f"{r['overhead_per_step_vs_bare_ms']:.1f}",
        )
    console.print(t)


def _per_step(console: Console, results: dict[str, Any]) -> None:
    lat = results["latency"]
    t = _table("per step (p50, ms)", "step", "queue hop", "step", "driver", "overhead")
    t.add_column("DB round trips", justify="right")
    counted = results.get("database", {}).get("postgresql", {}).get("per_step", {})
    for flow in ("confirm", "revert"):
        for name, r in lat[flow]["per_step"].items():
            trips = counted.get(name, {}).get("round_trips", "")
            t.add_row(
                f"{flow}.{flows.step(name).short}",
                f"{r['hop_ms']:.1f}",
                f"{r['step_ms']:.1f}",
                f"{r.get('driver_ms', 0.0):.1f}",
                f"{r.get('overhead_ms', r['step_ms']):.1f}",
                str(trips),
            )
    console.print(t)


def _peer(console: Console, results: dict[str, Any]) -> None:
    peer, lat = results["taskflow"], results["latency"]
    n = peer["confirm"]["n"]
    t = _table(
        f"TaskFlow's worker-based engine, same stack: {n} at once per engine, then one at a time",
        "flow",
        "TaskFlow wf/s",
        "resizeflow wf/s",
        "TaskFlow p50 ms",
        "resizeflow p50",
    )
    for col in ("TaskFlow p99 ms", "resizeflow p99", "errors"):
        t.add_column(col, justify="right")
    for flow in ("confirm", "revert"):
        p = peer[flow]
        t.add_row(
            f"{flow} ({p['steps']} steps)",
            f"{p['workflows_per_s']:.1f}",
            f"{p['resizeflow_workflows_per_s']:.1f}",
            f"{p['p50_ms']:.0f}",
            f"{lat[flow]['p50_ms']:.0f}",
            f"{p['p99_ms']:.0f}",
            f"{lat[flow]['p99_ms']:.0f}",
            str(p["errors"]),
        )
    console.print(t)
    _ratios(console, results)


def _ratios(console: Console, results: dict[str, Any]) -> None:
    """resizeflow ÷ bare chain beside resizeflow ÷ TaskFlow, for what was measured so far."""
    tp, lat = results.get("throughput", {}), results.get("latency", {})
    vs = results.get("vs_taskflow", {})
    t = _table(
        "resizeflow ÷ bare chain and ÷ TaskFlow (throughput: higher is better; latency: lower)",
        "flow",
        "throughput ÷ bare",
        "÷ TaskFlow",
        "p50 ÷ bare",
        "÷ TaskFlow",
    )
    t.add_column("p99 ÷ bare", justify="right")
    t.add_column("÷ TaskFlow", justify="right")

    def x(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}x"

    for flow in ("confirm", "revert"):
        if flow not in tp:
            continue
        r, v = lat.get(flow, {}), vs.get(flow, {})
        p99_bare = r["p99_ms"] / r["bare_p99_ms"] if r.get("bare_p99_ms") else None
        t.add_row(
            flow,
            x(tp[flow]["ratio_to_baseline"]),
            x(v.get("throughput")),
            x(r.get("ratio_to_bare")),
            x(v.get("p50")),
            x(p99_bare),
            x(v.get("p99")),
        )
    console.print(t)


def _scaling(console: Console, results: dict[str, Any]) -> None:
    s = _table("scaling: N confirms at once, fresh stack of H hosts", "H", "N", "wf/s")
    for col in ("bare wf/s", "ratio", "ms/wf", "CPU ms/wf", "bare CPU", "peak RSS MB"):
        s.add_column(col, justify="right")
    for p in results.get("scaling", []):
        peak = max(p["peak_rss_mb"].values()) if p["peak_rss_mb"] else 0
        s.add_row(
            str(p["hosts"]),
            str(p["n"]),
            f"{p['workflows_per_s']:.1f}",
            f"{p['bare_workflows_per_s']:.1f}",
            f"{p['ratio_to_baseline']:.2f}x",
            f"{p['cost_ms_per_workflow']:.1f}",
            f"{p['worker_cpu_ms_per_workflow']:.1f}",
            f"{p.get('bare_worker_cpu_ms_per_workflow', 0.0):.1f}",
            f"{peak:.0f}",
        )
    console.print(s)


def _scaling_point(console: Console, results: dict[str, Any]) -> None:
    p = results["scaling"][-1]
    console.print(
        f"scaling H={p['hosts']} N={p['n']}: {p['workflows_per_s']:.1f} wf/s, "
        f"{p['ratio_to_baseline']:.2f}x bare, {p['cost_ms_per_workflow']:.1f} ms/wf, "
        f"{p['worker_cpu_ms_per_workflow']:.1f} CPU ms/wf, {p['errors']} errors"
    )


def _profile(console: Console, results: dict[str, Any]) -> None:
    prof = results.get("profile", {})
    for kind, label in (("gil", "CPU (holding the GIL)"), ("busy", "busy threads")):
        if kind not in prof or not prof[kind]["samples"]:
            continue
        t = _table(f"worker hotspots, {label}, % of samples (self)", "function", "%")
        for row in prof[kind]["self"][:8]:
            t.add_row(row["function"], f"{row['pct']:.1f}")
        pk = ", ".join(f"{r['function']} {r['pct']:.0f}%" for r in prof[kind]["packages"][:6])
        t.caption = f"by package: {pk}"
        console.print(t)
    gil = prof.get("gil", {})
    if gil.get("resizeflow"):
        t = _table("resizeflow's own functions, CPU, % of samples (inclusive)", "function", "%")
        for row in gil["resizeflow"][:12]:
            t.add_row(row["function"], f"{row['pct']:.1f}")
        console.print(t)


# What is printed as each phase ends (see bench.harness.Run.show).
_PHASES = {
    "throughput": [_throughput],
    "latency": [_latency],
    "taskflow": [_peer],
    "profile": [_profile],
    "database": [_per_step],
    "scaling point": [_scaling_point],
}


def print_phase(console: Console, phase: str, results: dict[str, Any]) -> None:
    """The figures of a phase that has just ended."""
    for part in _PHASES.get(phase, []):
        part(console, results)


def _header(console: Console, results: dict[str, Any]) -> None:
    m = results["machine"]
    console.print(
        f"\n[bold]resizeflow bench[/bold] {results['started']}, {results['duration_s']:.0f}s on "
        f"{m['nproc']} x {m['cpu_model']}, {m['ram_gb']} GB RAM"
    )


def _targets(console: Console, results: dict[str, Any]) -> None:
    g = _table("targets", "target", "value", "limit", "result")
    for row in results["targets"]:
        g.add_row(row["target"], str(row["value"]), row["limit"], _mark(row["met"]))
    console.print(g)


def print_summary(console: Console, results: dict[str, Any]) -> None:
    """The end of a run whose phases were printed as they ended: ratios, scaling, targets."""
    _header(console, results)
    _ratios(console, results)
    if results.get("scaling"):
        _scaling(console, results)
    _targets(console, results)


def print_report(console: Console, results: dict[str, Any]) -> None:
    """Every table of a finished run, from its result dict (a saved JSON too)."""
    _header(console, results)
    _throughput(console, results)
    _latency(console, results)
    if "postgresql" in results.get("database", {}):
        _per_step(console, results)
    if "taskflow" in results:
        _peer(console, results)
    else:
        _ratios(console, results)
    _scaling(console, results)
    _profile(console, results)
    _targets(console, results)
