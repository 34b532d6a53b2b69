"""The parts of the docs that are read from the code, so that they cannot drift from it.

A docs page names a generated part with a marker on a line of its own,
``<!-- generated: NAME -->``, and :func:`fill` puts the part in its place when
the site is built (``docs/hooks.py`` calls it from MkDocs; nothing generated is
committed). The parts:

- ``settings``: every setting, its variable, its default and its help text,
  from :class:`resizeflow.conf.Settings`;
- ``flows``: every flow of :mod:`resizeflow.flows`, step by step;
- ``host-tasks``: the host tasks that are not steps of a flow.

Plain text in, plain text out: this module knows nothing of MkDocs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import MISSING, Field, fields
from pathlib import Path
from typing import Any

from resizeflow import flows
from resizeflow.conf import Settings

MARKER = re.compile(r"^<!-- generated: ([a-z-]+) -->$", re.MULTILINE)

_SUBJECT = {flows.Subject.MIGRATION: "migration id", flows.Subject.INSTANCE: "instance uuid"}
_ABORT = {
    flows.OnAbort.BACK_TO_VERIFY: "back to VERIFY_RESIZE if nothing reached the hypervisor",
    flows.OnAbort.NOTHING_TO_UNDO: "nothing to undo: the server keeps flavor, host and state",
    flows.OnAbort.LEAVE_IN_ERROR: "leave in ERROR, the fault naming the {intact} host",
}


def _row(*cells: str) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def _default(f: Field[Any]) -> str:
    value = f.default
    assert value is not MISSING, f"{f.name} has no default"
    if value is None:
        return "unset"
    if value == "":
        return "empty"
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, float) and value.is_integer():
        text = str(int(value))
    else:
        text = str(value)
    return f"`{text}`"


def settings_table() -> str:
    """The settings reference: one row per setting, in the order resizeflow.conf declares them."""
    rows = [_row("variable", "default", "what it does"), _row("---", "---", "---")]
    for f in fields(Settings):
        rows.append(_row(f"`{f.metadata['env']}`", _default(f), f.metadata["help"]))
    return "\n".join(rows)


def _host(side: flows.Side) -> str:
    return "the instance's" if side is flows.Side.INSTANCE else side.value


def _hypervisor(step: flows.Step) -> str:
    if step.hypervisor_phase:
        return "yes, with no row locked"
    return "yes" if step.touches_hypervisor else "no"


def _abort(flow: flows.Flow, step: flows.Step) -> str:
    # Only a migration's workflow is aborted (``workflow abort MIGRATION``).
    if flow.subject is not flows.Subject.MIGRATION:
        return ""
    return _ABORT[step.on_abort].format(intact=_host(flow.intact_on))


def flow_table() -> str:
    """The flow table: every flow's steps in order, each with its task, host and abort."""
    header = (
        "flow",
        "task argument",
        "step (Celery task)",
        "host",
        "hypervisor",
        "abort here",
        "Nova event",
    )
    rows = [_row(*header), _row(*("---",) * len(header))]
    for flow in flows.FLOWS.values():
        for at, step in enumerate(flow.steps):
            first = at == 0
            rows.append(
                _row(
                    flow.name if first else "",
                    _SUBJECT[flow.subject] if first else "",
                    f"`{step.task}`",
                    _host(step.side),
                    _hypervisor(step),
                    _abort(flow, step),
                    f"`{step.event}`",
                )
            )
    return "\n".join(rows)


def host_task_table() -> str:
    """The host tasks: work on a host that is not a step of a flow."""
    rows = [_row("host task", "Celery task"), _row("---", "---")]
    for f in fields(flows.HOST_TASKS):
        rows.append(_row(f.name, f"`{getattr(flows.HOST_TASKS, f.name)}`"))
    return "\n".join(rows)


GENERATORS: dict[str, Callable[[], str]] = {
    "settings": settings_table,
    "flows": flow_table,
    "host-tasks": host_task_table,
}


def fill(markdown: str) -> str:
    """``markdown`` with each marker replaced by its part; an unknown name is an error."""

    def part(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in GENERATORS:
            raise ValueError(f"no generated part is called {name!r}: {sorted(GENERATORS)}")
        return GENERATORS[name]()

    return MARKER.sub(part, markdown)


def markers(page: Path) -> list[str]:
    """The names of the generated parts a docs page asks for."""
    return MARKER.findall(page.read_text())
