"""The README is a guide with a table of contents; the reference pages exist; the manifest page is generated."""

from __future__ import annotations

import re

from conftest import ROOT
from release_rollback import content


def _anchor(title: str) -> str:
    return re.sub(r"[^a-z0-9 _-]", "", title.lower()).replace(" ", "-")


def test_the_committed_manifest_reference_is_the_one_the_schema_generates():
    generated = content.module_utils("manifest_schema").reference_markdown()
    committed = (ROOT / "docs" / "manifest.md").read_text()
    assert committed == generated, "docs/manifest.md is stale: run .venv/bin/python .ci/manifest_reference.py"
    for key in ("database.backup_dir", "validation.smoke.status", "notify.channels.url_env", "flags.read_back.field"):
        assert f"| `{key}` |" in committed


def test_the_readme_contents_link_to_its_sections_and_the_first_rollback_comes_early():
    text = (ROOT / "README.md").read_text()
    lines = text.splitlines()
    headings = {_anchor(line.lstrip("#").strip()) for line in lines if line.startswith("##")}
    contents = text.split("## Contents\n", 1)[1].split("\n## ", 1)[0]
    links = re.findall(r"\]\(#([^)]+)\)", contents)
    assert "your-first-rollback" in links and "install" in links
    assert set(links) <= headings
    first = next(i for i, line in enumerate(lines) if line == "## Your first rollback")
    assert first < 80, "the guide to a first rollback is near the top"


def test_every_page_the_readme_and_docs_link_to_exists():
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#:]+\.md)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).resolve().is_file(), f"{page.name} links to a missing {target}"
