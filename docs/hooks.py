"""MkDocs hooks: fill the docs' generated parts from the code at build time.

The parts themselves (the settings reference, the flow table) are rendered by
:mod:`resizeflow.docs_gen`; this file only hands each page's Markdown to it.
"""

from __future__ import annotations

from typing import Any

from resizeflow.docs_gen import fill


def on_page_markdown(markdown: str, **_: Any) -> str:
    return fill(markdown)
