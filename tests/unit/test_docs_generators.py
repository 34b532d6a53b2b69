"""The docs' generated parts: the settings reference and the flow table, read from the code."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from resizeflow import docs_gen, flows
from resizeflow.conf import HELP, PREFIX, Settings

DOCS = Path(__file__).resolve().parents[2] / "docs"


def cells(table: str, column: int) -> list[str]:
    """Column ``column`` of every body row of a Markdown table."""
    rows = [re.split(r"(?<!\\)\|", line)[1:-1] for line in table.splitlines()[2:]]
    return [row[column].strip() for row in rows]


def test_every_setting_has_help_text() -> None:
    for f in fields(Settings):
        assert f.metadata["help"].strip(), f"{f.metadata['env']} has no help text"
    # Help for a setting that no longer exists is stale text, not documentation.
    assert {PREFIX + name for name in HELP} == {f.metadata["env"] for f in fields(Settings)}


def test_the_settings_table_names_every_variable_with_its_help() -> None:
    table = docs_gen.settings_table()
    variables = cells(table, 0)
    assert variables == [f"`{f.metadata['env']}`" for f in fields(Settings)]
    helps = cells(table, 2)
    assert helps == [f.metadata["help"] for f in fields(Settings)]
    defaults = dict(zip(variables, cells(table, 1), strict=True))
    assert defaults["`RESIZEFLOW_STEP_TIMEOUT`"] == "`600`"
    assert defaults["`RESIZEFLOW_ALLOW_RESIZE_TO_SAME_HOST`"] == "`false`"
    assert defaults["`RESIZEFLOW_SHARED_STORAGE`"] == "unset"
    assert defaults["`RESIZEFLOW_RETRY_BACKOFF`"] == "`0.5`"


def test_the_flow_table_names_every_step_of_every_flow_in_order() -> None:
    table = docs_gen.flow_table()
    names, steps, hosts = cells(table, 0), cells(table, 2), cells(table, 3)
    expected = [f"`{s.task}`" for flow in flows.FLOWS.values() for s in flow.steps]
    assert steps == expected
    # Each flow's name opens its first row, and its steps follow until the next.
    assert [n for n in names if n] == list(flows.FLOWS)
    by_task = {f"`{t}`": step for t, (_, step) in flows.STEPS.items()}
    for task, host in zip(steps, hosts, strict=True):
        side = by_task[task].side
        assert host == ("the instance's" if side is flows.Side.INSTANCE else side.value)


def test_the_flow_table_says_what_an_abort_does() -> None:
    rows = dict(zip(cells(docs_gen.flow_table(), 2), cells(docs_gen.flow_table(), 5), strict=True))
    assert rows["`resizeflow.resize.prep_resize`"].startswith("nothing to undo")
    assert rows["`resizeflow.revert.destroy_dest_domain`"].startswith("back to VERIFY_RESIZE")
    assert rows["`resizeflow.confirm.confirm_migration`"].endswith("naming the dest host")
    assert rows["`resizeflow.instance.spawn`"] == ""


def test_the_host_tasks_table_names_every_host_task() -> None:
    tasks = cells(docs_gen.host_task_table(), 1)
    assert tasks == [f"`{getattr(flows.HOST_TASKS, f.name)}`" for f in fields(flows.HOST_TASKS)]


def test_fill_replaces_markers_and_refuses_an_unknown_one() -> None:
    page = "# Settings\n\n<!-- generated: settings -->\n\nafter\n"
    filled = docs_gen.fill(page)
    assert "<!-- generated" not in filled
    assert docs_gen.settings_table() in filled and filled.endswith("\nafter\n")
    with pytest.raises(ValueError, match="no generated part is called 'setings'"):
        docs_gen.fill("<!-- generated: setings -->\n")


def test_the_docs_place_every_generated_part() -> None:
    placed = [name for page in sorted(DOCS.rglob("*.md")) for name in docs_gen.markers(page)]
    assert sorted(placed) == sorted(docs_gen.GENERATORS)
