"""Regenerate the pages made from the code: docs/manifest.md (the manifest reference, from the schema
the manifest is checked against) and docs/database.md's table of migration tools (from the registry).

    .venv/bin/python .ci/manifest_reference.py

tests/unit/test_docs.py checks that the committed pages equal what this writes.
"""

from __future__ import annotations

import re
from pathlib import Path

from release_rollback import content

DOCS = Path(__file__).resolve().parent.parent / "docs"
TOOLS_SECTION = re.compile(r"(<!-- tools: generated -->\n).*?(<!-- tools: end -->)", re.S)

if __name__ == "__main__":
    page = DOCS / "manifest.md"
    page.write_text(content.module_utils("manifest_schema").reference_markdown(), encoding="utf-8")
    print(f"wrote {page}")
    page = DOCS / "database.md"
    table = content.module_utils("dbtools.registry").table_markdown()
    page.write_text(TOOLS_SECTION.sub(lambda m: m.group(1) + table + m.group(2), page.read_text()), encoding="utf-8")
    print(f"wrote the tools table of {page}")
