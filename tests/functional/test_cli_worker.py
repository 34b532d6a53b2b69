"""``resizeflow worker``: node names per process, pool controls, and what it refuses.

Real worker processes on a private redis-server and a SQLite file, built by
the same stack builder as the demo.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from resizeflow.devstack.stack import TEST_DRIVER_ENV, LocalStack, build
from tests.support.stack import wait_for


@pytest.fixture
def local(tmp_path: Path) -> Iterator[LocalStack]:
    if shutil.which("redis-server") is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is needed, and CI installs it")
        pytest.skip("redis-server is not installed")
    stack = build(tmp_path / "state", env={**TEST_DRIVER_ENV, "RESIZEFLOW_REPORT_INTERVAL": "1"})
    try:
        yield stack
    finally:
        stack.close()


def _worker(stack: LocalStack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "resizeflow", "worker", *args],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("Error: ")
    return lines[0]


def _stats(stack: LocalStack, node: str) -> dict[str, Any]:
    replies = stack.app.control.inspect(destination=[node], timeout=3).stats() or {}
    assert node in replies, replies
    return dict(replies[node])


def test_a_second_worker_for_a_test_driver_host_is_refused(local: LocalStack) -> None:
    node = local.start_worker("compute-1")
    assert node == f"compute-1-1@{socket.gethostname()}"

    line = _one_error_line(_worker(local, "--host", "compute-1"))
    assert "compute-1 already has a worker" in line and node in line
    # The first worker never noticed.
    assert local.app.control.ping(destination=[node], timeout=2)


def test_an_unknown_host_is_refused_unless_registered(local: LocalStack) -> None:
    line = _one_error_line(_worker(local, "--host", "compte-1"))
    assert "host compte-1 is not registered" in line and "--register" in line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--concurrency", "0"], "--concurrency"),
        (["--concurrency", "many"], "--concurrency"),
        (["--autoscale", "2,8"], "MIN <= MAX"),
        (["--pool", "prefork"], "test:/// driver keeps its domains in one process"),
        (["--pool", "solo", "--autoscale", "4"], "cannot grow"),
    ],
)
def test_bad_worker_options_are_one_line(local: LocalStack, args: list[str], expected: str) -> None:
    assert expected in _one_error_line(_worker(local, "--host", "compute-1", "--register", *args))


def test_flower_pool_controls_resize_a_threads_worker(local: LocalStack) -> None:
    node = local.start_worker("compute-1", "--concurrency", "2")
    assert _stats(local, node)["pool"]["max-concurrency"] == 2

    # What Flower's Grow and Shrink buttons send.
    assert local.app.control.pool_grow(3, destination=[node], reply=True, timeout=3) == [
        {node: {"ok": "pool will grow"}}
    ]
    assert _stats(local, node)["pool"]["max-concurrency"] == 5
    local.app.control.pool_shrink(4, destination=[node], reply=True, timeout=3)
    assert _stats(local, node)["pool"]["max-concurrency"] == 1
    assert _stats(local, node)["pool"]["resizable"] is True


def test_autoscale_and_a_pool_that_cannot_grow(local: LocalStack) -> None:
    scaled = local.start_worker("compute-1", "--autoscale", "6,2")
    assert _stats(local, scaled)["autoscaler"] == {"max": 6, "min": 2, "current": 2, "qty": 0}
    # What Flower's Autoscale form sends.
    local.app.control.autoscale(8, 3, destination=[scaled], reply=True, timeout=3)
    wait_for(lambda: _stats(local, scaled)["autoscaler"]["max"] == 8, 10, "the new autoscale range")

    solo = local.start_worker("compute-2", "--pool", "solo")
    pool = _stats(local, solo)["pool"]
    assert pool["resizable"] is False and "cannot grow" in pool["note"]
    (reply,) = local.app.control.pool_grow(1, destination=[solo], reply=True, timeout=3)
    assert "cannot grow" in reply[solo]["error"]


def test_two_workers_of_a_new_host_started_at_once_leave_one(local: LocalStack) -> None:
    names = [local.spawn_worker("compute-9", name=f"worker-{i}") for i in (1, 2)]
    wait_for(
        lambda: any(local.sup.procs[n].poll() is not None for n in names), 60, "one to be refused"
    )
    refused = next(n for n in names if local.sup.procs[n].poll() is not None)
    (kept,) = set(names) - {refused}
    assert local.sup.procs[refused].returncode == 1
    log = local.sup.log_path(refused).read_text()
    assert "Error: host compute-9 already has a worker" in log and "Traceback" not in log
    assert local.wait_workers([kept]) == [f"compute-9-1@{socket.gethostname()}"]
