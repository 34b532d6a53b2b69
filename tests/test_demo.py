"""``resizeflow demo`` runs to a clean exit with every workflow finished."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import redis


def test_demo_runs_every_workflow_and_cleans_up(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        if os.environ.get("CI"):
            pytest.fail("the demo needs redis-server, which CI installs")
        pytest.skip("redis-server is not installed")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESIZEFLOW_")}
    env.update(RESIZEFLOW_STATE_DIR=str(tmp_path / "var"), COLUMNS="160")
    done = subprocess.run(
        [sys.executable, "-m", "resizeflow", "demo", "--servers", "4", "--timeout", "120"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "all 4 workflows finished: 2 confirmed, 2 reverted" in out
    for step in (
        "teardown_source_network",
        "finish_confirm",
        "destroy_dest_domain",
        "finish_revert",
    ):
        assert step in out
    assert "SHUTOFF" in out  # the stopped server stayed stopped through its revert
    state = tmp_path / "var" / "demo"
    assert {p.name for p in (state / "logs").iterdir()} >= {
        "redis.log",
        "worker-compute-1.log",
        "worker-compute-2.log",
        "beat.log",
        "demo.log",
    }
    # Everything the demo started is gone: its Redis no longer answers.
    with pytest.raises(redis.exceptions.ConnectionError):
        redis.Redis(unix_socket_path=str(state / "redis.sock"), socket_timeout=1).ping()
