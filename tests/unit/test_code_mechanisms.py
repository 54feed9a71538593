"""The code mechanism registry: one file per mechanism, every one named in the registry, and the
modules taking their options and choices from it."""

from __future__ import annotations

import ast

import pytest
from conftest import ROOT
from release_rollback import content

MECHS = ROOT / "collections/ansible_collections/release/rollback/plugins/module_utils/code_mechanisms"
SHARED = {"__init__", "base", "registry"}


def test_the_registry_names_every_mechanism_file_and_nothing_else():
    files = {p.stem for p in MECHS.glob("*.py")} - SHARED
    tree = ast.parse((MECHS / "registry.py").read_text())
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.endswith("module_utils.code_mechanisms")
        for alias in node.names
    }
    assert imported == files, "code_mechanisms/registry.py must import each file by name (Ansible ships only those)"
    registry = content.module_utils("code_mechanisms.registry")
    base = content.module_utils("code_mechanisms.base")
    assert {cls.__module__.rsplit(".", 1)[1] for cls in registry.MECHANISMS.values()} == files
    for cls in registry.MECHANISMS.values():
        assert issubclass(cls, base.CodeMechanism)
    assert registry.args()["mechanism"]["choices"] == list(registry.names())
    assert registry.args()["mechanism"]["default"] == "release_dirs"


def test_an_unknown_mechanism_is_one_sentence_naming_the_choices():
    registry = content.module_utils("code_mechanisms.registry")
    base = content.module_utils("code_mechanisms.base")
    with pytest.raises(
        base.MechanismError, match="unknown code mechanism 'k8s': set rollback_code_mechanism to one of"
    ):
        registry.get("k8s")


def test_the_module_docs_offer_exactly_the_registry_s_mechanisms():
    import yaml

    registry = content.module_utils("code_mechanisms.registry")
    frag = (
        ROOT / "collections/ansible_collections/release/rollback/plugins/doc_fragments/code_mechanism.py"
    ).read_text()
    doc = yaml.safe_load(frag.split('r"""', 1)[1].split('"""', 1)[0])
    assert doc["options"]["mechanism"]["choices"] == list(registry.names())
    assert set(doc["options"]) == set(registry.args())
