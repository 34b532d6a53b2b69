"""Failure injection for tests and chaos runs, off unless RESIZEFLOW_FAILPOINTS_FILE is set.

The file is JSON: ``{"<step name>": [rule, ...]}``. A rule is
``{"mode": "transient" | "fatal" | "delay", "times": N, "probability": P,
"instance_uuid": U, "seconds": S}``;
``times`` counts down across every worker sharing the file (a missing ``times``
means every time), ``probability`` defaults to 1, and ``instance_uuid``
restricts the rule to one server. Each rule counts in ``fired`` how many times
it struck, so a run can show that its faults did. ``delay`` sleeps ``seconds`` and lets the step
run, which holds a step in flight for shutdown tests. An injected failure is raised just before the
step's own work, inside its transaction, exactly like a driver failure. A step with a
hypervisor phase also checks ``"<step name>:hypervisor"`` just before that phase's work,
with no row locked: a ``delay`` there stands for a long disk copy; and
``"<step name>:after_hypervisor"`` just after it, before the step commits its effects.
"""

from __future__ import annotations

import fcntl
import json
import random
import time
from pathlib import Path
from typing import Any

from resizeflow import errors


def _take(rules: list[dict[str, Any]], step: str, instance_uuid: str) -> dict[str, Any] | None:
    for rule in rules:
        if rule.get("instance_uuid") not in (None, instance_uuid):
            continue
        if rule.get("times", 1) <= 0:
            continue
        if random.random() >= float(rule.get("probability", 1.0)):
            continue
        if "times" in rule:
            rule["times"] -= 1
        rule["fired"] = rule.get("fired", 0) + 1
        return rule
    return None


def check(path: str, step: str, instance_uuid: str) -> None:
    if not path:
        return
    file = Path(path)
    if not file.exists():
        return
    with file.open("r+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        table = json.loads(fh.read() or "{}")
        rule = _take(table.get(step, []), step, instance_uuid)
        if rule is not None:
            fh.seek(0)
            fh.truncate()
            fh.write(json.dumps(table))
    if rule is None:
        return
    if rule.get("mode") == "delay":
        time.sleep(float(rule.get("seconds", 1.0)))
        return
    mode = rule.get("mode", "transient")
    reason = f"injected {mode} failure in {step}"
    if mode == "fatal":
        raise errors.StepFailed(step=step, reason=reason)
    if mode == "transient":
        raise errors.TransientError(reason=reason)
    raise errors.ConfigError(f"{path}: unknown failpoint mode {mode!r} for {step}")
