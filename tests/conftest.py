"""What every tier shares: each test's tier comes from its folder, and CI runs every test.

    tests/unit/          marker fast       pure logic and in-process code, no service
    tests/functional/    marker services   real Redis, PostgreSQL and RabbitMQ
    tests/hosts/         marker hosts      two hosts on one machine, one sshd each
    tests/chaos/         marker chaos      fault injection on a stack of its own
    tests/vm/            marker vm         real QEMU guests on qemu:///system
    tests/conformance/   marker nova       real Nova 34 beside resizeflow
    tests/support/       no tests: the stacks, hosts, invariants and chaos harness

The Makefile selects a tier by its marker, which is added here from the folder,
so the two always agree: a test module outside the tier folders, or a tier
marker that contradicts its folder, stops the collection.

A service, tool or privilege a test needs skips it locally when missing. In CI
(``CI`` set) nothing may skip: a missing service already fails the test there,
and any skip at all fails the session.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

# The two-host fixtures (one sshd per test host); see tests/support/hosts.py.
pytest_plugins = ("tests.support.hosts",)

HERE = Path(__file__).resolve().parent
# Folder -> the marker of its tier.
TIERS = {
    "unit": "fast",
    "functional": "services",
    "hosts": "hosts",
    "chaos": "chaos",
    "vm": "vm",
    "conformance": "nova",
}
TIER_MARKERS = frozenset(TIERS.values())


def tier_of(path: Path) -> str | None:
    """The tier folder a test module is in, or None."""
    try:
        parts = path.resolve().relative_to(HERE).parts
    except ValueError:
        return None
    return parts[0] if len(parts) > 1 and parts[0] in TIERS else None


@pytest.hookimpl(tryfirst=True)  # before -m deselects by the markers added here
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    problems: list[str] = []
    for item in items:
        folder = tier_of(item.path)
        if folder is None:
            problems.append(
                f"{item.nodeid}: a test outside the tier folders; move its module into one "
                f"of tests/{{{','.join(TIERS)}}}/"
            )
            continue
        marker = TIERS[folder]
        other = sorted({m.name for m in item.iter_markers()} & TIER_MARKERS - {marker})
        if other:
            problems.append(
                f"{item.nodeid}: marked {', '.join(other)} in tests/{folder}/, "
                f"the {marker} tier; move it to that tier's folder"
            )
        item.add_marker(getattr(pytest.mark, marker))
    if problems:
        raise pytest.UsageError("tests out of their tier:\n" + "\n".join(sorted(set(problems))))


def _skipped(config: pytest.Config) -> list[Any]:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    return list(reporter.stats.get("skipped", [])) if reporter is not None else []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # In CI every test runs: a skip means a service, a tool or a privilege is
    # missing, or a test that cannot run here was generated. Under xdist the
    # controller, which receives every report, decides.
    if not os.environ.get("CI") or hasattr(session.config, "workerinput"):
        return
    if exitstatus == pytest.ExitCode.OK and _skipped(session.config):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    from tests.support.chaos import REPORTS, summary

    if REPORTS:
        table = summary(REPORTS)
        terminalreporter.write_sep("=", "chaos summary")
        terminalreporter.write_line(table)
        out = os.environ.get("RESIZEFLOW_CHAOS_SUMMARY")
        if out:
            Path(out).write_text(table + "\n")
    skipped = _skipped(config)
    if os.environ.get("CI") and skipped and not hasattr(config, "workerinput"):
        terminalreporter.write_sep("=", f"{len(skipped)} skipped: a failure in CI", red=True)
        for report in skipped:
            reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else ""
            terminalreporter.write_line(f"{report.nodeid}: {reason}")
