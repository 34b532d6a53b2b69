"""The docs pages against what they describe: every make target is documented."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def phony_targets() -> set[str]:
    makefile = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    (line,) = re.findall(r"^\.PHONY:(.*)$", makefile, re.MULTILINE)
    return set(line.split())


def test_the_development_page_names_every_make_target() -> None:
    targets = phony_targets()
    assert {"test", "docs", "chaos", "bench-vm", "test-nova"} <= targets
    page = (ROOT / "docs" / "development.md").read_text()
    rows = [line for line in page.splitlines() if line.startswith("| `make")]
    documented = {m for row in rows for m in re.findall(r"`make ?([a-z-]*)`", row)}
    missing = targets - documented
    # `make` alone is `make all`.
    assert "" in documented and "all" in documented
    assert not missing, sorted(missing)
