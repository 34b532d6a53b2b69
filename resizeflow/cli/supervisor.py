"""Start and stop the processes of an embedded stack: Redis, workers, beat, API.

Every process is started with its own log file and stopped on exit, on
Ctrl-C as on error: SIGTERM first, so that workers finish the step they are
running, then SIGKILL for whatever is still alive after the grace period.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis


@dataclass
class Supervisor:
    state_dir: Path
    env: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(
                argv,
                env={**self.env, **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches us, and we stop them in order
            )

    def resizeflow(self, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.spawn(name, [sys.executable, "-m", "resizeflow", *args], env)

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (self.log_dir / f"{name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")

    def wait_until(self, what: str, ready: Callable[[], bool], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(0.1)

    def stop_all(self, grace: float = 30.0) -> None:
        # Reverse order: the API and workers go before the Redis they use.
        for proc in reversed(self.procs.values()):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in reversed(self.procs.values()):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()


def start_redis(sup: Supervisor) -> str:
    """A private redis-server on a unix socket under the state dir; returns its broker URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    sock = (sup.state_dir / "redis.sock").resolve()
    sup.spawn(
        "redis",
        [
            binary,
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--unixsocketperm",
            "700",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(sup.state_dir.resolve()),
        ],
    )

    def ping() -> bool:
        try:
            return bool(redis.Redis(unix_socket_path=str(sock)).ping())
        except redis.exceptions.ConnectionError:
            return False

    sup.wait_until("redis-server", ping, timeout=30)
    return f"redis+socket://{sock}"
