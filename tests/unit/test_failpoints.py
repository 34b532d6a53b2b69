"""Failure injection from a real JSON file shared by every worker."""

from __future__ import annotations

import contextlib
import fcntl
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from resizeflow.errors import ConfigError, StepFailed, TransientError
from resizeflow.steps import failpoints
from tests.support.stack import wait_for

STEP = "resizeflow.confirm.confirm_migration"
OTHER = "resizeflow.revert.finish_revert"
VM1, VM2 = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"


def write(tmp_path: Path, table: dict[str, list[dict[str, Any]]]) -> Path:
    path = tmp_path / "failpoints.json"
    path.write_text(json.dumps(table))
    return path


def test_times_counts_down_and_persists(tmp_path: Path) -> None:
    path = write(tmp_path, {STEP: [{"mode": "transient", "times": 2}]})
    for left in (1, 0):
        with pytest.raises(TransientError, match=f"injected transient failure in {STEP}"):
            failpoints.check(str(path), STEP, VM1)
        assert json.loads(path.read_text())[STEP][0]["times"] == left
    failpoints.check(str(path), STEP, VM1)  # used up
    assert json.loads(path.read_text())[STEP][0]["times"] == 0


def test_without_times_fires_every_time(tmp_path: Path) -> None:
    path = write(tmp_path, {STEP: [{"mode": "fatal"}]})
    for _ in range(3):
        with pytest.raises(StepFailed):
            failpoints.check(str(path), STEP, VM1)
    assert json.loads(path.read_text()) == {STEP: [{"mode": "fatal", "fired": 3}]}


def test_fired_counts_only_the_times_a_rule_struck(tmp_path: Path) -> None:
    rules = [{"mode": "transient", "times": 1}, {"mode": "transient", "instance_uuid": VM2}]
    path = write(tmp_path, {STEP: rules})
    for vm in (VM1, VM1, VM2, VM1):
        with contextlib.suppress(TransientError):
            failpoints.check(str(path), STEP, vm)
    first, second = json.loads(path.read_text())[STEP]
    assert (first["fired"], second["fired"]) == (1, 1)


def test_fatal_raises_step_failed(tmp_path: Path) -> None:
    path = write(tmp_path, {STEP: [{"mode": "fatal", "times": 1}]})
    with pytest.raises(StepFailed) as info:
        failpoints.check(str(path), STEP, VM1)
    assert info.value.message == f"Step {STEP} failed: injected fatal failure in {STEP}"
    assert not isinstance(info.value, TransientError)


def test_default_mode_is_transient(tmp_path: Path) -> None:
    path = write(tmp_path, {STEP: [{"times": 1}]})
    with pytest.raises(TransientError):
        failpoints.check(str(path), STEP, VM1)


def test_instance_filter(tmp_path: Path) -> None:
    path = write(tmp_path, {STEP: [{"mode": "fatal", "times": 1, "instance_uuid": VM2}]})
    failpoints.check(str(path), STEP, VM1)
    assert json.loads(path.read_text())[STEP][0]["times"] == 1
    with pytest.raises(StepFailed):
        failpoints.check(str(path), STEP, VM2)
    failpoints.check(str(path), STEP, VM2)


def test_rules_apply_only_to_their_step(tmp_path: Path) -> None:
    path = write(tmp_path, {OTHER: [{"mode": "fatal", "times": 1}]})
    failpoints.check(str(path), STEP, VM1)
    with pytest.raises(StepFailed):
        failpoints.check(str(path), OTHER, VM1)


def test_first_live_rule_wins(tmp_path: Path) -> None:
    rules = [{"mode": "fatal", "times": 1}, {"mode": "transient", "times": 1}]
    path = write(tmp_path, {STEP: rules})
    with pytest.raises(StepFailed):
        failpoints.check(str(path), STEP, VM1)
    with pytest.raises(TransientError):
        failpoints.check(str(path), STEP, VM1)
    failpoints.check(str(path), STEP, VM1)
    assert [r["times"] for r in json.loads(path.read_text())[STEP]] == [0, 0]


def test_probability_zero_never_fires(tmp_path: Path) -> None:
    path = write(tmp_path, {STEP: [{"mode": "fatal", "times": 5, "probability": 0}]})
    for _ in range(20):
        failpoints.check(str(path), STEP, VM1)
    assert json.loads(path.read_text())[STEP][0]["times"] == 5


def test_off_when_unset_missing_or_empty(tmp_path: Path) -> None:
    failpoints.check("", STEP, VM1)
    failpoints.check(str(tmp_path / "absent.json"), STEP, VM1)
    assert not (tmp_path / "absent.json").exists()
    empty = tmp_path / "empty.json"
    empty.write_text("")
    failpoints.check(str(empty), STEP, VM1)
    assert empty.read_text() == ""


def test_delay_lets_the_step_run(tmp_path: Path) -> None:
    path = write(tmp_path, {STEP: [{"mode": "delay", "seconds": 0.5, "times": 1}]})
    started = time.monotonic()
    failpoints.check(str(path), STEP, VM1)  # held, then let through: nothing raised
    assert time.monotonic() - started >= 0.5
    assert json.loads(path.read_text())[STEP][0]["times"] == 0
    # While one step is held, the file is not: another step's rule fires at once.
    write(tmp_path, {STEP: [{"mode": "delay", "seconds": 60, "times": 1}], OTHER: [{}]})
    held = threading.Thread(target=failpoints.check, args=(str(path), STEP, VM1), daemon=True)
    held.start()

    def taken() -> bool:
        with path.open() as fh:  # as the workers read it: under the file's lock
            fcntl.flock(fh, fcntl.LOCK_SH)
            return bool(json.loads(fh.read())[STEP][0]["times"] == 0)

    wait_for(taken, 30, "the delay to take its rule")
    with pytest.raises(TransientError):
        failpoints.check(str(path), OTHER, VM1)
    assert held.is_alive()


def test_unknown_mode_is_a_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "fp.json"
    path.write_text(json.dumps({"s": [{"mode": "fatl"}]}))
    with pytest.raises(ConfigError, match="unknown failpoint mode 'fatl'"):
        failpoints.check(str(path), "s", "u")
