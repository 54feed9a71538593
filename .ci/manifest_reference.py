"""Regenerate docs/manifest.md, the manifest reference, from the schema the manifest is checked against.

    .venv/bin/python .ci/manifest_reference.py

tests/unit/test_docs.py checks that the committed page equals what this writes.
"""

from __future__ import annotations

from pathlib import Path

from release_rollback import content

PAGE = Path(__file__).resolve().parent.parent / "docs" / "manifest.md"

if __name__ == "__main__":
    PAGE.write_text(content.module_utils("manifest_schema").reference_markdown(), encoding="utf-8")
    print(f"wrote {PAGE}")
