"""The migration tool registry: one file per tool, every tool named in the registry, and the
manifest, the module and the docs all taking the list from it."""

from __future__ import annotations

import ast
import re

import pytest
from conftest import ROOT
from release_rollback import content

DBTOOLS = ROOT / "collections/ansible_collections/release/rollback/plugins/module_utils/dbtools"
SHARED = {"__init__", "base", "client", "registry", "stage"}


def test_the_registry_names_every_tool_file_and_nothing_else():
    files = {p.stem for p in DBTOOLS.glob("*.py")} - SHARED
    tree = ast.parse((DBTOOLS / "registry.py").read_text())
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.endswith("module_utils.dbtools")
        for alias in node.names
    }
    assert imported == files, "dbtools/registry.py must import each tool file by name (Ansible ships only those)"
    registry = content.module_utils("dbtools.registry")
    assert set(registry.names()) == files


def test_each_tool_is_one_file_that_describes_itself():
    registry = content.module_utils("dbtools.registry")
    base = content.module_utils("dbtools.base")
    for name, tool in registry.TOOLS.items():
        assert issubclass(tool, base.MigrationTool)
        assert tool.__module__.rsplit(".", 1)[1] == name, f"tool {name} lives in dbtools/{name}.py"
        assert tool.needs in ("config", "migrations")
        assert tool.runs and tool.recognises, f"tool {name} says how it runs and what it recognises"
        assert set(tool.engines) <= {"postgresql", "mysql", "sqlite"}


def test_the_manifest_schema_and_the_module_take_the_tools_from_the_registry():
    registry = content.module_utils("dbtools.registry")
    schema = content.module_utils("manifest_schema")
    manifest = content.module_utils("manifest")
    assert schema.SCHEMA["database"]["options"]["tool"]["choices"] == list(registry.names())
    assert registry.names() == manifest.DB_TOOLS
    module = (ROOT / "collections/ansible_collections/release/rollback/plugins/modules/db_migrate.py").read_text()
    assert "choices=[" not in re.search(r"tool=dict\([^)]*\)", module).group(0)


def test_the_docs_table_of_tools_is_the_one_the_registry_generates():
    page = (ROOT / "docs" / "database.md").read_text()
    committed = page.split("<!-- tools: generated -->\n", 1)[1].split("<!-- tools: end -->", 1)[0]
    generated = content.module_utils("dbtools.registry").table_markdown()
    assert committed == generated, (
        "docs/database.md's tools table is stale: run .venv/bin/python .ci/manifest_reference.py"
    )
    for name in content.module_utils("dbtools.registry").names():
        assert f"| `{name}` |" in committed


def test_a_tool_setting_it_does_not_take_is_refused_in_one_sentence(mu):

    with pytest.raises(mu.manifest.ManifestError) as err:
        mu.manifest.parse_manifest(
            {
                "version": "v2",
                "database": {"tool": "sql", "migrations": "/srv/m", "target_revision": 1, "settings": {"tabel": "x"}},
            }
        )
    assert str(err.value) == "database.settings tabel is not a setting of tool sql: use table"
    parsed = mu.manifest.parse_manifest(
        {
            "version": "v2",
            "database": {"tool": "sql", "migrations": "/srv/m", "target_revision": 1, "settings": {"table": "x"}},
        }
    )
    assert parsed["database"]["settings"] == {"table": "x"} and parsed["database"]["target_revision"] == "1"
