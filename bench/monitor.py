"""Watch worker processes from outside: resident memory and CPU time, from /proc."""

from __future__ import annotations

import bisect
import os
import threading
import time

TICKS = os.sysconf("SC_CLK_TCK")


def status_kb(pid: int, key: str) -> int:
    """A ``kB`` field of /proc/<pid>/status (VmRSS, VmHWM); 0 once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time of ``pids``, in seconds."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


class RssSampler(threading.Thread):
    """Samples VmRSS of each worker every ``interval`` seconds, in the background."""

    def __init__(self, pids: dict[str, int], interval: float = 0.25) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pids, self.interval = pids, interval
        self.samples: list[tuple[float, dict[str, int]]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval)

    def sample(self) -> None:
        self.samples.append((time.time(), {h: status_kb(p, "VmRSS") for h, p in self.pids.items()}))

    def stop(self) -> dict[str, int]:
        """Stop sampling; returns each worker's peak RSS (VmHWM) in kB."""
        peaks = {h: status_kb(p, "VmHWM") for h, p in self.pids.items()}
        self.sample()
        self._stop_event.set()
        self.join()
        return peaks

    def at(self, t: float) -> dict[str, int]:
        """The first sample taken at or after ``t`` (the last one if none is)."""
        times = [s[0] for s in self.samples]
        i = min(bisect.bisect_left(times, t), len(self.samples) - 1)
        return self.samples[i][1]


def rss_growth(
    sampler: RssSampler, done_times: list[float], first: int, last: int
) -> dict[str, object]:
    """Per-worker RSS growth between the ``first``-th and ``last``-th finished workflow.

    ``done_times`` are the times workflows finished; when fewer than ``last``
    finished, the last one stands in and ``to_workflow`` says which it was.
    """
    ordered = sorted(done_times)
    if len(ordered) <= first or not sampler.samples:
        return {"from_workflow": first, "to_workflow": len(ordered), "growth_pct": None}
    upto = min(last, len(ordered))
    before, after = sampler.at(ordered[first - 1]), sampler.at(ordered[upto - 1])
    growth = {
        h: 100.0 * (after[h] - before[h]) / before[h] for h in before if before[h] and h in after
    }
    return {
        "from_workflow": first,
        "to_workflow": upto,
        "rss_kb_from": before,
        "rss_kb_to": after,
        "growth_pct_by_worker": growth,
        "growth_pct": max(growth.values()) if growth else None,
    }
