"""``resizeflow demo`` runs to a clean exit with every workflow finished."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import select

from resizeflow.cli.demo import NEXT_COMMANDS
from resizeflow.conf import Settings
from resizeflow.db.models import Migration
from resizeflow.db.session import Database
from resizeflow.states import MigrationStatus
from tests.support.stack import wait_for


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

    # What it says to run next works, with its env file sourced as it says.
    assert f"source {state / 'demo.env'}" in out
    for command, expect in zip(NEXT_COMMANDS, ("vm-1", "prep_resize"), strict=True):
        assert command in out
        ran = subprocess.run(
            ["bash", "-c", f"source {state / 'demo.env'} && {command}"],
            env={**env, "PATH": f"{Path(sys.executable).parent}:{env['PATH']}"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ran.returncode == 0, (command, ran.stdout, ran.stderr)
        assert expect in ran.stdout, (command, ran.stdout)


CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
DEMO = [sys.executable, "-m", "resizeflow", "demo"]


def _need(*paths: str) -> None:
    missing = [p for p in paths if not Path(p).exists() and shutil.which(p) is None]
    if not missing:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{', '.join(missing)} missing; `make browser-deps` installs them")
    pytest.skip(f"{', '.join(missing)} missing (make browser-deps)")


def _processes_of(state_dir: Path) -> list[int]:
    """Every process that the demo started: its environment points at ``state_dir``
    (redis-server rewrites that memory for its title; its command line names it)."""
    mark = f"RESIZEFLOW_STATE_DIR={state_dir}".encode()
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if mark in environ or str(state_dir).encode() in cmdline:
            found.append(int(proc.name))
    return found


def _browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument("--window-size=1500,1000")
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def _flower_rows(driver: Any, search: str) -> list[list[str]]:
    """The task list's rows (name, args, worker, ...) for a search typed into Flower."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.CSS_SELECTOR, "input[aria-controls='tasks-table']")
    box.clear()
    box.send_keys(search)
    rows: list[list[str]] = []

    def loaded() -> bool:
        rows.clear()
        try:
            for tr in driver.find_elements(By.CSS_SELECTOR, "#tasks-table tbody tr"):
                cells = [td.text.replace("\n", "") for td in tr.find_elements(By.TAG_NAME, "td")]
                if len(cells) > 1:
                    rows.append(cells)
        except StaleElementReferenceException:  # the table redrew as we read it
            return False
        return bool(rows) and all(search in r[0] for r in rows)

    wait_for(loaded, 30, f"Flower's rows for {search}")
    return rows


def test_flower_sees_the_demo_and_sigterm_stops_everything(tmp_path: Path) -> None:
    _need("redis-server", CHROMIUM, CHROMEDRIVER)
    state = (tmp_path / "var" / "demo").resolve()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESIZEFLOW_")}
    env.update(RESIZEFLOW_STATE_DIR=str(tmp_path / "var"), COLUMNS="160")
    out = tmp_path / "demo.out"
    with open(out, "wb") as sink:
        demo = subprocess.Popen(
            [*DEMO, "--servers", "4", "--flower", "--keep-running", "--timeout", "120"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(
            lambda: "keeps running" in out.read_text() or demo.poll() is not None,
            240,
            "the demo to finish its workflows",
        )
        text = out.read_text()
        assert demo.poll() is None, text
        assert "all 4 workflows finished" in text
        flower_url = next(
            line.split()[1] for line in text.splitlines() if line.strip().startswith("Flower")
        )
        database = Database(Settings.from_env({"RESIZEFLOW_STATE_DIR": str(state)}).db_url)
        with database.snapshot() as s:
            by_status = {
                status: {
                    str(m_id)
                    for m_id in s.scalars(select(Migration.id).where(Migration.status == status))
                }
                for status in (MigrationStatus.CONFIRMED, MigrationStatus.REVERTED)
            }
        database.dispose()
        assert all(len(ids) == 2 for ids in by_status.values()), by_status

        driver = _browser()
        try:
            driver.get(f"{flower_url}/tasks")
            for step, status in (
                ("resizeflow.confirm.teardown_source_network", MigrationStatus.CONFIRMED),
                ("resizeflow.confirm.finish_confirm", MigrationStatus.CONFIRMED),
                ("resizeflow.revert.destroy_dest_domain", MigrationStatus.REVERTED),
                ("resizeflow.revert.finish_revert", MigrationStatus.REVERTED),
            ):
                rows = _flower_rows(driver, step)
                # One row per workflow, its migration id as the argument, run by a
                # host's worker process, in the columns the operator reads.
                # Celery shows a chain's first message's args as (1,), the next ones' as [1].
                assert {r[1].strip("[]()").rstrip(",") for r in rows} == by_status[status], rows
                assert all(r[2].startswith("compute-") and r[3] == "SUCCESS" for r in rows)
            _flower_rows(driver, "resizeflow.")
            shot = tmp_path / "flower-tasks.png"
            driver.save_screenshot(str(shot))
            assert shot.stat().st_size > 10_000
            if os.environ.get("RESIZEFLOW_SCREENSHOT"):  # `make screenshot` refreshes the docs'
                shutil.copy(shot, os.environ["RESIZEFLOW_SCREENSHOT"])
        finally:
            driver.quit()

        started = _processes_of(state)
        assert len(started) >= 7, started  # redis, 2 workers, beat and its child, API, Flower
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(timeout=90) == 0, out.read_text()
        assert "SIGTERM: stopping" in out.read_text()
        assert _processes_of(state) == []
        # Flower saved what it saw, for its next start (--persistent).
        assert list(state.glob("flower.db*"))
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        for pid in _processes_of(state):
            os.kill(pid, signal.SIGKILL)
