"""The real-VM bench's worker: ``python -m bench.vmprobe HOST OUT.jsonl``.

It is ``resizeflow worker --host HOST`` with the virt driver's time split, and
nothing of the core changed. After every task it appends one JSON line to
OUT.jsonl: the task, its migration id, its wall time, and the driver's time
in it, split into

- ``copy``: disks crossing to the dest (``LibvirtDriver._copy_disk``), with
  ``copy_bytes``, what crossed;
- ``shutdown``: clean shutdowns and hard stops (``_stop``);
- ``boot``: starting a domain and waiting until it runs (``_start``);
- ``driver``: every public driver call, outermost only, so the rest of the
  driver's work (defining domains, ``qemu-img``, the shared-storage probe) is
  ``driver`` minus the three above.

Lines are written as each task ends, so the bench reads them as it goes.
"""

from __future__ import annotations

import functools
import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from celery import signals

from bench.probe import DRIVER_METHODS
from resizeflow.conf import load
from resizeflow.virt.libvirt import LibvirtDriver

PARTS = {"_copy_disk": "copy", "_stop": "shutdown", "_start": "boot"}
FIELDS = ("copy", "copy_bytes", "shutdown", "boot", "driver")

_local = threading.local()
_write = threading.Lock()


def _timed(fn: Callable[..., Any], part: str | None) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        counts: dict[str, float] | None = getattr(_local, "counts", None)
        if counts is None:
            return fn(*args, **kwargs)
        depth = _local.depth
        _local.depth = depth + 1
        t0 = time.perf_counter()
        result = None
        try:
            result = fn(*args, **kwargs)
            return result
        finally:
            _local.depth = depth
            took = time.perf_counter() - t0
            if part is not None:
                counts[part] += took
                if part == "copy" and isinstance(result, int):
                    counts["copy_bytes"] += result
            elif depth == 0:
                counts["driver"] += took

    return wrapper


def instrument() -> None:
    for name in DRIVER_METHODS:
        setattr(LibvirtDriver, name, _timed(getattr(LibvirtDriver, name), None))
    for name, part in PARTS.items():
        setattr(LibvirtDriver, name, _timed(getattr(LibvirtDriver, name), part))


def _prerun(**_kw: Any) -> None:
    _local.counts = dict.fromkeys(FIELDS, 0.0)
    _local.depth = 0
    _local.t0 = time.perf_counter()


def _postrun_to(out: Path) -> Callable[..., None]:
    def postrun(task: Any = None, args: Any = None, **_kw: Any) -> None:
        counts = getattr(_local, "counts", None)
        if counts is None or task is None:
            return
        _local.counts = None
        line = {
            "task": task.name,
            "key": args[0] if args else None,
            "wall": time.perf_counter() - _local.t0,
            **counts,
        }
        with _write, out.open("a") as fh:
            fh.write(json.dumps(line) + "\n")

    return postrun


def main(argv: list[str]) -> None:
    host, out = argv
    from resizeflow.worker import run

    instrument()
    signals.task_prerun.connect(_prerun, weak=False)
    signals.task_postrun.connect(_postrun_to(Path(out)), weak=False)
    run(load().with_host(host), loglevel="INFO", register=True)


if __name__ == "__main__":
    main(sys.argv[1:])
