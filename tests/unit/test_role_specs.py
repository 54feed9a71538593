"""Every role's defaults/main.yml says what its meta/argument_specs.yml says."""

from pathlib import Path

import pytest
import yaml

ROLES = Path(__file__).resolve().parents[2] / "collections" / "ansible_collections" / "release" / "rollback" / "roles"


@pytest.mark.parametrize("role", sorted(p.name for p in ROLES.iterdir() if (p / "defaults" / "main.yml").exists()))
def test_defaults_equal_the_argument_specs(role):
    defaults = yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text()) or {}
    specs = yaml.safe_load((ROLES / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    # Every entry point's options together (assess has one per task file).
    options = {k: v for entry in specs.values() for k, v in (entry.get("options") or {}).items()}
    # Options without a default are inputs the caller must give (e.g. the stage name).
    assert {k: v.get("default") for k, v in options.items() if "default" in v or k in defaults} == defaults
