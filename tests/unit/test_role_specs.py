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


PLAYBOOKS = ROLES.parent / "playbooks"  # the collection's playbooks
_ROLE_INCLUDES = {f"{prefix}{verb}_role" for prefix in ("", "ansible.builtin.") for verb in ("include", "import")}


def _specs(role):
    return yaml.safe_load((ROLES / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]


def _role_calls(node):
    """``(role, tasks_from)`` of every include_role/import_role in a loaded YAML document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ROLE_INCLUDES and isinstance(value, dict) and value.get("tasks_from"):
                yield value["name"], value["tasks_from"]
            else:
                yield from _role_calls(value)
    elif isinstance(node, list):
        for item in node:
            yield from _role_calls(item)


def _used_entry_points():
    used = set()
    for path in [*sorted(PLAYBOOKS.glob("*.yml")), *sorted(ROLES.glob("*/tasks/*.yml"))]:
        for name, tasks_from in _role_calls(yaml.safe_load(path.read_text())):
            assert name.startswith("release.rollback."), f"{path.name} includes {name}"
            used.add((name.split(".")[-1], tasks_from.removesuffix(".yml").removesuffix(".yaml")))
    return used


def test_the_playbooks_use_entry_points_through_tasks_from():
    # The scan below finds what it must find (or it would prove nothing).
    assert {("stage", "gate"), ("assess", "flags"), ("code_config", "lock"), ("feature_flags", "flag_off")} <= (
        _used_entry_points()
    )


@pytest.mark.parametrize("role, entry", sorted(_used_entry_points()))
def test_every_entry_point_used_with_tasks_from_is_declared(role, entry):
    assert entry in _specs(role), f"{role}/tasks/{entry}.yml is used with tasks_from but has no argument spec"


@pytest.mark.parametrize(
    "role", sorted(p.name for p in ROLES.iterdir() if (p / "meta" / "argument_specs.yml").exists())
)
def test_every_entry_point_and_option_is_described(role):
    for entry, spec in _specs(role).items():
        assert (ROLES / role / "tasks" / f"{entry}.yml").is_file(), f"{role}: entry point {entry} has no task file"
        assert spec.get("short_description"), f"{role}:{entry} has no short_description"
        assert spec.get("description"), f"{role}:{entry} has no description"
        for name, option in (spec.get("options") or {}).items():
            assert option.get("description"), f"{role}:{entry} option {name} has no description"
            assert option.get("type"), f"{role}:{entry} option {name} has no type"
