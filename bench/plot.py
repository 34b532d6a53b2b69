"""The scaling curves as one PNG (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _by(points: list[dict[str, Any]], key: str) -> dict[int, list[dict[str, Any]]]:
    groups: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for p in points:
        groups[p[key]].append(p)
    return dict(sorted(groups.items()))


def plot_scaling(results: dict[str, Any], path: Path) -> Path | None:
    """Throughput against hosts, cost and memory against load; None without scaling data."""
    points = results.get("scaling", [])
    if not points:
        return None
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    (a, b), (c, d) = axes
    for n, pts in _by(points, "n").items():
        pts = sorted(pts, key=lambda p: p["hosts"])
        if len(pts) < 2:
            continue
        hs = [p["hosts"] for p in pts]
        line = a.plot(hs, [p["workflows_per_s"] for p in pts], "o-", label=f"confirm, N={n}")
        colour = line[0].get_color()
        a.plot(
            hs, [p["bare_workflows_per_s"] for p in pts], "s--", color=colour, label=f"bare, N={n}"
        )
        a.set_xticks(hs)
    a.set(title="throughput vs hosts (bare: chain of 4 no-ops)", xlabel="hosts (H)")
    a.set_ylabel("workflows/s")
    for h, pts in _by(points, "hosts").items():
        pts = sorted(pts, key=lambda p: p["n"])
        if len(pts) < 2:
            continue
        ns = [p["n"] for p in pts]
        line = b.plot(ns, [p["cost_ms_per_workflow"] for p in pts], "o-", label=f"confirm, H={h}")
        colour = line[0].get_color()
        bare = [1000 / p["bare_workflows_per_s"] for p in pts]
        b.plot(ns, bare, "s--", color=colour, label=f"bare, H={h}")
        c.plot(ns, [p["worker_cpu_ms_per_workflow"] for p in pts], "o-", label=f"confirm, H={h}")
        bare_cpu = [p.get("bare_worker_cpu_ms_per_workflow", 0.0) for p in pts]
        c.plot(ns, bare_cpu, "s--", color=colour, label=f"bare, H={h}")
        d.plot(ns, [max(p["peak_rss_mb"].values()) for p in pts], "o-", label=f"H={h}")
        for ax in (b, c, d):
            ax.set_xticks(ns)
    b.set(title="wall cost per workflow vs load", xlabel="workflows at once (N)", ylabel="ms")
    c.set(title="worker CPU per workflow vs load", xlabel="workflows at once (N)", ylabel="ms")
    d.set(title="peak RSS per worker vs load", xlabel="workflows at once (N)", ylabel="MB (VmHWM)")
    for ax in (a, b, c, d):
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    m = results["machine"]
    fig.suptitle(
        f"resizeflow bench {results['started']}: {m['nproc']} x {m['cpu_model']}, PostgreSQL"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
