"""``--wait``: follow a server operation with a live display until it ends.

A resize, confirm or revert shows its step journal, one row per step with its
host, attempts, duration and error. Other operations show the server's state.
The wait ends when the server reaches the state the operation leads to, or
when the workflow or server goes to error.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from resizeflow import flows
from resizeflow.cli.backend import Backend, Gone

STEP_STYLE = {
    "pending": "dim",
    "running": "yellow",
    "retrying": "magenta",
    "done": "green",
    "failed": "bold red",
}


@dataclass(frozen=True)
class Goal:
    """What an operation leads to: server statuses, and a migration status if it has a flow."""

    statuses: frozenset[str]
    flow: str | None = None
    migration_status: str | None = None
    gone: bool = False
    # The API sets a task_state when it accepts the operation; once the task
    # is cleared the operation is over, whether or not it reached its goal.
    sets_task: bool = True


GOALS = {
    "create": Goal(frozenset({"ACTIVE"})),
    "resize": Goal(frozenset({"VERIFY_RESIZE"}), "resize", "finished"),
    "confirmResize": Goal(
        frozenset({"ACTIVE", "SHUTOFF"}), "confirm", "confirmed", sets_task=False
    ),
    "revertResize": Goal(frozenset({"ACTIVE", "SHUTOFF"}), "revert", "reverted"),
    "migrate": Goal(frozenset({"VERIFY_RESIZE"}), "resize", "finished"),
    "os-stop": Goal(frozenset({"SHUTOFF"})),
    "os-start": Goal(frozenset({"ACTIVE"})),
    "reboot": Goal(frozenset({"ACTIVE"})),
    "delete": Goal(frozenset(), gone=True, sets_task=False),
}


@dataclass
class Snapshot:
    server: dict[str, Any] | None
    migration: dict[str, Any] | None
    steps: list[dict[str, Any]]


def steps_table(steps: list[dict[str, Any]], title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("#", "step", "host", "status", "attempts", "duration", "error"):
        table.add_column(col, overflow="fold")
    for i, st in enumerate(steps, 1):
        duration = st.get("duration")
        error = (st.get("last_error") or "").strip().splitlines()
        table.add_row(
            str(i),
            flows.step(st["step"]).short,
            st["host"],
            Text(st["status"], style=STEP_STYLE.get(st["status"], "")),
            str(st["attempts"]),
            "" if duration is None else f"{duration:.2f}s",
            error[-1][:120] if error else "",
        )
    return table


def _render(op: str, snap: Snapshot, elapsed: float) -> Group:
    parts: list[Any] = []
    if snap.server is not None:
        s = snap.server
        parts.append(
            Text(
                f"{op} {s['id']}: status {s['status']}, task "
                f"{s.get('OS-EXT-STS:task_state') or '-'}, host "
                f"{s.get('OS-EXT-SRV-ATTR:host') or '-'}  ({elapsed:.1f}s)"
            )
        )
    else:
        parts.append(Text(f"{op}: server gone ({elapsed:.1f}s)"))
    if snap.migration is not None:
        parts.append(Text(f"migration {snap.migration['id']}: {snap.migration['status']}"))
    if snap.steps:
        parts.append(steps_table(snap.steps))
    return Group(*parts)


class Follower:
    def __init__(self, backend: Backend, server_id: str, op: str) -> None:
        self.backend = backend
        self.server_id = server_id
        self.op = op
        self.goal = GOALS[op]
        self.migration_id: int | None = None
        if self.goal.flow is not None:
            self.migration_id = self._find_migration()

    def _find_migration(self) -> int | None:
        # Needs the admin-only migrations list; others follow the server alone.
        try:
            found = self.backend.migrations(instance_uuid=self.server_id)
        except click.ClickException:
            return None
        return int(found[0]["id"]) if found else None

    def snapshot(self) -> Snapshot:
        try:
            server: dict[str, Any] | None = self.backend.server(self.server_id)
        except Gone:
            server = None
        migration, steps = None, []
        if self.migration_id is not None:
            wf = self.backend.workflow(self.migration_id)
            migration = wf["migration"]
            steps = [st for st in wf["steps"] if st["flow"] == self.goal.flow]
        return Snapshot(server, migration, steps)

    def verdict(self, snap: Snapshot) -> str | None:
        """'ok', 'error' or None (still going)."""
        if snap.server is None:
            return "ok" if self.goal.gone else "error"
        if snap.migration is not None and snap.migration["status"] == "error":
            return "error"
        if any(st["status"] == "failed" for st in snap.steps):
            return "error"
        # A hard reboot of a server in ERROR shows ERROR until it is done.
        if snap.server.get("OS-EXT-STS:task_state"):
            return None
        if snap.server["status"] == "ERROR":
            return "error"
        settled = all(st["status"] == "done" for st in snap.steps)
        reached = snap.migration is None or snap.migration["status"] == self.goal.migration_status
        if snap.server["status"] in self.goal.statuses and settled and reached:
            return "ok"
        if self.goal.sets_task and snap.server["status"] not in self.goal.statuses and settled:
            return "error"
        return None


def follow(
    backend: Backend,
    server_id: str,
    op: str,
    *,
    timeout: float,
    interval: float = 0.25,
    console: Console | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Show the operation live; raise a one-line ClickException unless it ends well."""
    console = console or Console()
    follower = Follower(backend, server_id, op)
    start = clock()
    snap = follower.snapshot()
    # NOTE: a live display redraws in place with terminal escapes; piped to a
    # file or a CI log it runs its frames together. There, each change is a line.
    show: Callable[[Snapshot, float], None]
    live: Live | None = None
    if console.is_terminal:
        live = Live(_render(op, snap, 0.0), console=console, refresh_per_second=8)
        live.start()

        def show(snap: Snapshot, elapsed: float) -> None:
            assert live is not None
            live.update(_render(op, snap, elapsed))
    else:
        said: set[str] = set()

        def show(snap: Snapshot, elapsed: float) -> None:
            for line in progress_lines(op, snap):
                if line not in said:
                    said.add(line)
                    console.print(line, soft_wrap=True, highlight=False, markup=False)

    try:
        while True:
            verdict = follower.verdict(snap)
            elapsed = clock() - start
            show(snap, elapsed)
            if verdict is not None:
                break
            if elapsed > timeout:
                raise click.ClickException(f"{op} of {server_id} did not finish in {timeout:.0f}s")
            time.sleep(interval)
            snap = follower.snapshot()
    finally:
        if live is not None:
            live.stop()
    if verdict == "error":
        raise click.ClickException(_failure(op, server_id, snap))


def progress_lines(op: str, snap: Snapshot) -> list[str]:
    """The state of an operation as plain lines, one per fact that can change."""
    lines = []
    if snap.server is None:
        lines.append(f"{op}: server gone")
    else:
        s = snap.server
        lines.append(
            f"{op} {s['id']}: status {s['status']}, task "
            f"{s.get('OS-EXT-STS:task_state') or '-'}, host {s.get('OS-EXT-SRV-ATTR:host') or '-'}"
        )
    if snap.migration is not None:
        lines.append(f"migration {snap.migration['id']}: {snap.migration['status']}")
    for st in snap.steps:
        error = (st.get("last_error") or "").strip().splitlines()
        lines.append(
            f"step {st['step'].rsplit('.', 1)[-1]} on {st['host']}: {st['status']}"
            f" (attempt {st['attempts']})" + (f": {error[-1][:120]}" if error else "")
        )
    return lines


def _failure(op: str, server_id: str, snap: Snapshot) -> str:
    failed = [st for st in snap.steps if st["status"] == "failed"]
    if failed:
        error = (failed[0].get("last_error") or "").strip().splitlines()
        step = flows.step(failed[0]["step"]).short
        return f"{op} of {server_id} failed at step {step}: {error[-1] if error else 'error'}"
    fault = (snap.server or {}).get("fault", {}).get("message")
    if snap.server is None:
        return f"{op} of {server_id}: the server disappeared"
    return f"{op} of {server_id} ended in {snap.server['status']}" + (f": {fault}" if fault else "")
