"""Every filter and module of the collection is documented as ansible-doc renders it, truthfully."""

from __future__ import annotations

import importlib
import inspect

import pytest
import yaml
from release_rollback import content

COLLECTION = content.collections_path() / "ansible_collections" / "release" / "rollback"
content.module_utils("plan")  # puts the collection on the import path, as the driver does
FILTER_PLUGIN = importlib.import_module("ansible_collections.release.rollback.plugins.filter.rollback")
FILTERS = FILTER_PLUGIN.FilterModule().filters()


def test_every_filter_doc_belongs_to_a_filter():
    docs = {p.stem for p in (COLLECTION / "plugins" / "filter").glob("*.yml")}
    assert docs == set(FILTERS)


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_the_filter_has_docs_that_match_its_arguments(name):
    path = COLLECTION / "plugins" / "filter" / (name + ".yml")
    assert path.is_file(), f"{name} has no {path.name}: ansible-doc -t filter cannot render it"
    data = yaml.safe_load(path.read_text())
    doc = data["DOCUMENTATION"]
    assert doc["name"] == name
    assert doc["short_description"] and doc["description"]
    assert doc["version_added"] == "1.0.0"
    params = list(inspect.signature(FILTERS[name]).parameters)
    options = doc["options"]
    # The filter's first argument is what is piped into it; the rest are its options, in order.
    assert list(options) == ["_input", *params[1:]]
    assert [p.strip() for p in doc["positional"].split(",")] == ["_input", *params[1:]]
    for option, spec in options.items():
        assert spec.get("description"), f"{name}: option {option} has no description"
        assert spec.get("type"), f"{name}: option {option} has no type"
    assert f"release.rollback.{name}" in data["EXAMPLES"]
    yaml.safe_load(data["EXAMPLES"])
    assert data["RETURN"]["_value"]["description"]


def _module_doc(path):
    import ast

    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "DOCUMENTATION":
            return yaml.safe_load(node.value.value)
    raise AssertionError(f"{path.name} has no DOCUMENTATION")


MODULES = sorted((COLLECTION / "plugins" / "modules").glob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_the_module_declares_its_attributes_and_requirements(path):
    doc = _module_doc(path)
    source = path.read_text()
    assert doc["version_added"] == "1.0.0"
    assert doc.get("requirements"), f"{path.stem} declares no requirements"
    attributes = doc.get("attributes") or {}
    assert set(attributes) == {"check_mode", "diff_mode", "platform"}
    for name, attribute in attributes.items():
        assert attribute.get("description") and attribute.get("support"), f"{path.stem}: {name}"
    assert attributes["platform"]["platforms"] == "posix"
    # What the docs claim is what AnsibleModule is told, and what the module does.
    check = attributes["check_mode"]
    assert ("supports_check_mode=False" in source) == (check["support"] == "none"), path.stem
    if check["support"] == "partial":
        assert check.get("details"), f"{path.stem}: partial check mode must say what it does"
    assert ("module._diff" in source) == (attributes["diff_mode"]["support"] != "none"), path.stem
