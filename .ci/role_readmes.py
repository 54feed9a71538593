"""Regenerate the "## Variables" section of every role README from its meta/argument_specs.yml.

    .venv/bin/python .ci/role_readmes.py

The text above "## Variables" is kept (a new README gets the role's short description); the
tables list every option of every entry point with its type and default, as
tests/integration/test_collection_product.py checks.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

ROLES = Path(__file__).resolve().parent.parent / "collections/ansible_collections/release/rollback/roles"


def _cell(text) -> str:
    return str(text).replace("|", "&#124;").replace("\n", " ")


def variables(specs: dict) -> str:
    out = [
        "## Variables",
        "",
        "Every variable of the role, by entry point (`tasks_from`). Defaults live in `defaults/main.yml`, and "
        "`meta/argument_specs.yml` declares them. ansible-core checks them when the role runs through `main`, or "
        "through another entry point named without its extension (`tasks_from: gate`); the collection's "
        "playbooks name task files (`tasks_from: gate.yml`), which ansible-core does not check.",
    ]
    for entry, spec in specs.items():
        out += ["", f"### `{entry}`", ""]
        if spec.get("short_description"):
            out += [spec["short_description"], ""]
        options = spec.get("options") or {}
        if not options:
            out.append("No variables.")
            continue
        out += ["| variable | type | default | description |", "|---|---|---|---|"]
        for name, option in options.items():
            if "default" in option:
                default = option["default"] if isinstance(option["default"], str) else json.dumps(option["default"])
                shown = f"`{_cell(default) or chr(34) * 2}`"
            elif option.get("required"):
                shown = "required"
            else:
                shown = "unset"  # optional, and the tasks say what its absence means
            desc = option.get("description") or ""
            desc = " ".join(desc) if isinstance(desc, list) else desc
            out.append(f"| `{name}` | {option.get('type', 'str')} | {shown} | {_cell(desc)} |")
    return "\n".join(out) + "\n"


def main() -> None:
    for role in sorted(p for p in ROLES.iterdir() if (p / "meta" / "argument_specs.yml").is_file()):
        specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
        readme = role / "README.md"
        if readme.is_file():
            head = readme.read_text().split("## Variables")[0].rstrip() + "\n\n"
        else:
            head = f"# release.rollback.{role.name}\n\n{specs.get('main', {}).get('short_description', '')}\n\n"
        readme.write_text(head + variables(specs))


if __name__ == "__main__":
    main()
