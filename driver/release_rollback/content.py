"""Where the collection, the playbooks and the demo inventory are, in a checkout or an installed wheel.

The driver imports the collection's pure-Python module_utils from there, so the domain logic
(stage table, plan, manifest, audit, report) has one implementation for every entry point.
"""

from __future__ import annotations

import importlib
import sys
from functools import cache
from pathlib import Path

_HERE = Path(__file__).resolve().parent
# The stage playbooks live in the collection (``ansible-playbook release.rollback.rollback``);
# the project's ``playbooks/`` holds one-line wrappers of them for AWX projects and operators.
_PLAYBOOKS = Path("collections/ansible_collections/release/rollback/playbooks")


@cache
def root() -> Path:
    """The directory holding ``collections/`` (the collection, its playbooks included) and ``inventories/``."""
    checkout = _HERE.parent.parent  # driver/release_rollback -> project root
    if (checkout / _PLAYBOOKS / "rollback.yml").is_file():
        return checkout
    packaged = _HERE / "_content"
    if (packaged / _PLAYBOOKS / "rollback.yml").is_file():
        return packaged
    raise RuntimeError("the release.rollback collection and playbooks are missing from this installation")


def collections_path() -> Path:
    return root() / "collections"


def playbook(stage: str) -> Path:
    """The collection's playbook for ``stage`` (or ``execute``, ``approval``, ``signoff``...)."""
    return root() / _PLAYBOOKS / f"{stage}.yml"


def demo_inventory_dir() -> Path:
    return root() / "inventories" / "demo"


def module_utils(name: str):
    """Import ``release.rollback``'s module_utils ``name`` (e.g. ``plan``)."""
    path = str(collections_path())
    if path not in sys.path:
        sys.path.append(path)
    return importlib.import_module(f"ansible_collections.release.rollback.plugins.module_utils.{name}")
