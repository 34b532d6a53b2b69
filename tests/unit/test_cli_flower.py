"""``resizeflow flower``: what it passes to Flower, and where it refuses to listen."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from resizeflow.cli.ops import FLOWER_TASK_COLUMNS, flower_argv
from resizeflow.conf import Settings


def test_flower_keeps_its_state_and_shows_the_operators_columns(tmp_path: Path) -> None:
    settings = Settings.from_env({"RESIZEFLOW_STATE_DIR": str(tmp_path)})
    argv = flower_argv(settings, 5555, "127.0.0.1")
    assert "--persistent=True" in argv
    assert f"--db={tmp_path / 'flower.db'}" in argv
    assert f"--tasks_columns={FLOWER_TASK_COLUMNS}" in argv
    assert FLOWER_TASK_COLUMNS.split(",")[:4] == ["name", "args", "worker", "state"]
    assert not any(a.startswith("--basic_auth") for a in argv)

    authed = Settings.from_env(
        {"RESIZEFLOW_STATE_DIR": str(tmp_path), "RESIZEFLOW_FLOWER_BASIC_AUTH": "ops:s3cret"}
    )
    assert "--basic_auth=ops:s3cret" in flower_argv(authed, 5555, "0.0.0.0")


def test_flower_beyond_localhost_without_basic_auth_is_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESIZEFLOW_")}
    done = subprocess.run(
        [sys.executable, "-m", "resizeflow", "flower", "--address", "0.0.0.0"],
        env={**env, "RESIZEFLOW_STATE_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr == (
        "Error: refusing to serve Flower beyond localhost without RESIZEFLOW_FLOWER_BASIC_AUTH\n"
    )
