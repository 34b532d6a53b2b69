"""Running a transport's command: in its own process group, bounded, and never orphaned."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from contextlib import suppress
from dataclasses import dataclass

from resizeflow.errors import RemoteHostUnreachable
from resizeflow.virt.remotefs.base import RemoteHost


def _with_pdeathsig(argv: list[str]) -> list[str]:
    # If the worker is SIGKILLed mid-copy, its rsync must die with it: an
    # orphan would keep writing the .part file while the re-driven step copies
    # into it too. setpriv sets PR_SET_PDEATHSIG before exec. Note that the
    # signal follows the forking thread, which for a Celery thread pool is a
    # long-lived worker thread that waits on this very process.
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--", *argv] if setpriv else argv


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


def run_command(argv: list[str], timeout: float | None) -> Run:
    """Run a command in its own process group; on timeout kill the whole group."""
    proc = subprocess.Popen(
        _with_pdeathsig(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # rsync and its ssh both go, so nothing writes to the .part file
        # behind the next attempt's back.
        _kill_group(proc)
        out, err = proc.communicate()
        return Run(-signal.SIGKILL, out, f"{err}\ntimed out after {timeout:.0f}s")
    except BaseException:
        # The worker is shutting down: same reasoning, then let it go on.
        _kill_group(proc)
        proc.wait()
        raise
    return Run(proc.returncode, out, err)


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


class Deadline:
    def __init__(self, timeout: float | None) -> None:
        self._end = None if timeout is None else time.monotonic() + timeout

    def left(self, host: RemoteHost, op: str) -> float | None:
        if self._end is None:
            return None
        left = self._end - time.monotonic()
        if left <= 0:
            raise RemoteHostUnreachable(
                host=host.name, address=host.address, reason=f"{op}: out of time"
            )
        return left
