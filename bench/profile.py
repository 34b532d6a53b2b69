"""Sample a worker with py-spy while a batch runs, and rank where its time goes.

py-spy attaches from outside (it needs ptrace: root, or kernel.yama.ptrace_scope
0), so the worker runs unchanged. Its ``raw`` output is collapsed stacks, one
``frame;frame;... count`` per line; idle threads are left out, so the shares
are of the worker's busy time, which includes waiting on the database socket.
With ``--gil`` only samples holding the GIL count: where the CPU goes.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<fn>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")


def pyspy() -> str | None:
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


class Recording:
    """A py-spy recording of one process, from :meth:`start` to :meth:`stop`."""

    def __init__(self, pid: int, out: Path, *, gil: bool = False, rate: int = 100) -> None:
        self.pid, self.out, self.rate, self.gil = pid, out, rate, gil
        self.proc: subprocess.Popen[bytes] | None = None
        self.error = ""

    def start(self) -> bool:
        binary = pyspy()
        if binary is None:
            self.error = "py-spy is not installed"
            return False
        argv = [binary, "record", "--pid", str(self.pid), "--rate", str(self.rate)]
        argv += ["--format", "raw", "--output", str(self.out), "--nonblocking", "--full-filenames"]
        if self.gil:
            argv.append("--gil")
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        return True

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        if not self.out.exists():
            self.error = err.decode(errors="replace")[-500:]


def _name(frame: str) -> tuple[str, str]:
    """``(function (short/path.py), package)`` of one py-spy frame."""
    m = _FRAME.match(frame.strip())
    if m is None:
        return frame.strip(), "?"
    path = m.group("file")
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
        package = path.split("/", 1)[0]
    elif "/resizeflow/" in path:
        path = "resizeflow/" + path.split("/resizeflow/", 1)[1]
        package = "resizeflow"
    else:
        path = "/".join(path.split("/")[-2:])
        package = "stdlib"
    return f"{m.group('fn')} ({path})", package


def summarize(raw: Path, top: int = 15) -> dict[str, Any]:
    """Top functions by self and by inclusive share of the sampled busy time.

    ``resizeflow`` ranks the project's own functions by inclusive share: where
    the step runner's time goes, below Celery's tracer.
    """
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    ours: Counter[str] = Counter()  # inclusive, resizeflow's own functions only
    packages: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        named = [_name(f) for f in stack.split(";") if f.strip()]
        if not named:
            continue
        total += n
        own[named[-1][0]] += n
        packages[named[-1][1]] += n
        for name in {f for f, _ in named}:
            incl[name] += n
        # The main thread's stack starts in resizeflow's entry point, around
        # Celery's consumer loop: only what Celery calls counts.
        entry = next((i for i, (_, pkg) in enumerate(named) if pkg == "celery"), len(named))
        for name in {f for f, pkg in named[entry:] if pkg == "resizeflow"}:
            ours[name] += n

    def ranked(c: Counter[str]) -> list[dict[str, Any]]:
        return [{"function": k, "pct": round(100.0 * v / total, 1)} for k, v in c.most_common(top)]

    if not total:
        return {"samples": 0, "self": [], "inclusive": [], "resizeflow": [], "packages": []}
    return {
        "samples": total,
        "self": ranked(own),
        "inclusive": ranked(incl),
        "resizeflow": ranked(ours),
        "packages": ranked(packages),
    }
