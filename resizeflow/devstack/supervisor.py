"""Start and stop local processes, each with its own log file.

Every process runs in a session of its own, so a Ctrl-C in the terminal
reaches only the supervising process, which then stops the others in order:
SIGTERM first, so that workers finish the step they are running, then SIGKILL
for whatever is still alive after the grace period. Once a process has exited,
what is left of its process group (beat's embedded scheduler, a prefork
pool's children) is killed too, so nothing outlives the supervisor.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Supervisor:
    state_dir: Path
    env: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: Path | None = None  # default: ``<state_dir>/logs``
    # The processes' working directory (default: ours); relative settings,
    # such as the default state dir ``./var``, are read from there.
    cwd: Path | None = None

    @property
    def log_dir(self) -> Path:
        return self.logs if self.logs is not None else self.state_dir / "logs"

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def spawn(
        self, name: str, argv: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path(name), "ab") as log:
            proc = subprocess.Popen(
                argv,
                env={**self.env, **(env or {})},
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches us, and we stop them in order
            )
        self.procs[name] = proc
        return proc

    def resizeflow(
        self, name: str, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        return self.spawn(name, [sys.executable, "-m", "resizeflow", *args], env)

    def alive(self, name: str) -> bool:
        proc = self.procs.get(name)
        return proc is not None and proc.poll() is None

    def check_alive(self, *names: str) -> None:
        """Raise with the tail of its log if a process (of ``names``, or any) has exited."""
        for name, proc in list(self.procs.items()):
            if names and name not in names:
                continue
            if proc.poll() is not None:
                tail = self.log_path(name).read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")

    def wait_until(
        self,
        what: str,
        ready: Callable[[], object],
        timeout: float = 60.0,
        watch: tuple[str, ...] = (),
    ) -> None:
        """Poll ``ready`` until it is true; fail early if a watched process exits."""
        deadline = time.monotonic() + timeout
        while not ready():
            self.check_alive(*watch)
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(0.1)

    def stop(self, name: str, grace: float = 30.0) -> int | None:
        """SIGTERM one process, SIGKILL it after ``grace``; returns its exit code."""
        proc = self.procs.pop(name, None)
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        return _reap(proc, time.monotonic() + grace)

    def kill(self, name: str) -> None:
        """SIGKILL: no warm shutdown, no goodbye heartbeat, unacked messages stay unacked."""
        proc = self.procs.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop_all(self, grace: float = 30.0) -> None:
        # NOTE: reverse order of start: the API and workers go before the Redis
        # they use, so a worker's warm shutdown can still acknowledge its step.
        procs = list(reversed(self.procs.values()))
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in procs:
            _reap(proc, deadline)
        self.procs.clear()


def _reap(proc: subprocess.Popen[bytes], deadline: float) -> int:
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    # The process group outlives its leader when children are left (beat's
    # scheduler, pool processes): they go with it.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.wait()
