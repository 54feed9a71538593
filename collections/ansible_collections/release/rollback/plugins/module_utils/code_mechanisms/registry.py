# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every code mechanism, by the inventory's ``rollback_code_mechanism``.

A mechanism is one file in this package (see ``base.CodeMechanism``) with ``MECHANISM = <its
class>``. Ansible ships a module to the host with only the module_utils it imports by name, so the
list is written out rather than found on disk; a test keeps it equal to the files of the package.
"""

from __future__ import annotations

from ansible_collections.release.rollback.plugins.module_utils.code_mechanisms import (  # one name per file
    compose,
    containers,
    release_dirs,
)
from ansible_collections.release.rollback.plugins.module_utils.code_mechanisms.base import MechanismError

DEFAULT = "release_dirs"
MECHANISMS = {}


def register(mechanism):
    if not mechanism.name or (mechanism.name in MECHANISMS and MECHANISMS[mechanism.name] is not mechanism):
        raise ValueError("a code mechanism needs a name of its own: %r" % (mechanism.name,))
    MECHANISMS[mechanism.name] = mechanism
    return mechanism


for _file in (release_dirs, containers, compose):
    register(_file.MECHANISM)


def names():
    return tuple(MECHANISMS)


def get(name):
    """The mechanism called ``name`` (the default when empty); MechanismError names the choices otherwise."""
    cls = MECHANISMS.get(name or DEFAULT)
    if cls is None:
        raise MechanismError(
            "unknown code mechanism %r: set rollback_code_mechanism to one of %s" % (name, ", ".join(MECHANISMS))
        )
    return cls()


def args():
    """The module options of every mechanism, with the selector (``mechanism``)."""
    spec = dict(mechanism=dict(type="str", default=DEFAULT, choices=list(MECHANISMS)))
    for cls in MECHANISMS.values():
        spec.update(cls.args)
    return spec


def read_host(module):
    """The host's releases and lock for ``module`` (DISCOVERY_ARGS and ``args()``), by its mechanism;
    fails the module on a host whose releases cannot be read."""
    from ansible_collections.release.rollback.plugins.module_utils.releases import ReleaseError

    p = module.params
    try:
        mechanism = get(p.get("mechanism"))
        info = mechanism.discover(p, mechanism.runner(module))
    except (ReleaseError, MechanismError, OSError) as exc:
        module.fail_json(msg=str(exc))
    holder = info["lock"]
    info["locked"] = bool(holder and p["run_id"] and holder.get("run_id") == p["run_id"])
    return info
