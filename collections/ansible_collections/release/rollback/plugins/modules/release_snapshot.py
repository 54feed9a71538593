#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: release_snapshot
short_description: Record at deploy time what a later rollback needs (the deployment snapshot)
version_added: "1.0.0"
description:
  - Run by a deploy once the new release is live (for instance as an ansistrano C(after_symlink) hook).
  - Copies the configuration files kept outside the release to
    C(<app_root>/snapshots/<release>/files/<absolute path>), the location the rollback restores them from.
  - Writes C(<app_root>/snapshots/<release>/record.json) with the release it replaced, the database
    revision before the deploy, the flags the release introduced and the infrastructure reference.
    The assess stage prefers this record to discovery.
  - Idempotent; supports check mode. One round trip per host.
  - With O(mechanism=containers), records the running container's image digest, its version, the release it
    replaced with that image's digest, and the container's run configuration (network, ports, volumes, labels,
    command, the names of its environment variables and the env file, never their values).
options:
  app_root:
    description: The deploy_to directory.
    type: path
    required: true
  release:
    description: The release to record; the live one by default.
    type: str
  previous:
    description: The release it replaced; by default the newest older release not marked unfinished or rolled back.
    type: str
  config_files:
    description: Absolute paths of configuration files outside the release.
    type: list
    elements: path
    default: []
  db_revision:
    description: The database revision before this deploy migrated it.
    type: str
  flags:
    description: The feature flags this release introduced.
    type: list
    elements: str
    default: []
  infra_ref:
    description: The infrastructure reference of this release (an IaC commit, a config version).
    type: str
extends_documentation_fragment:
  - release.rollback.releases
  - release.rollback.code_mechanism
requirements:
  - Python 3 on the host; with O(mechanism=containers), the container CLI.
attributes:
  check_mode:
    description: Can run in check mode and return the changed status prediction without modifying the target.
    support: full
    details:
      - Reports what the snapshot would record, without writing it.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode) when in diff mode.
    support: none
  platform:
    description: Target OS/families that can be operated against.
    support: N/A
    platforms: posix
author:
  - release-rollback contributors (@release-rollback)
"""

EXAMPLES = r"""
- name: Record the deployment snapshot (ansistrano after_symlink hook)
  release.rollback.release_snapshot:
    app_root: "{{ ansistrano_deploy_to }}"
    config_files: [/etc/shop/app.conf]
    db_revision: "{{ db_revision_before_deploy }}"
    flags: [new-checkout]
"""

RETURN = r"""
release:
  description: The release recorded.
  returned: success
  type: str
record:
  description: The record written (release, previous, config_files, db_revision_before, flags, infra_ref).
  returned: success
  type: dict
files:
  description: The configuration files whose snapshot was written or updated.
  returned: success
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.release.rollback.plugins.module_utils.code_mechanisms import registry as mechanisms
from ansible_collections.release.rollback.plugins.module_utils.code_mechanisms.base import MechanismError
from ansible_collections.release.rollback.plugins.module_utils.releases import DIR_ARGS, ReleaseError


def main():
    module = AnsibleModule(
        argument_spec=dict(
            app_root=dict(type="path", required=True),
            release=dict(type="str"),
            previous=dict(type="str"),
            config_files=dict(type="list", elements="path", default=[]),
            db_revision=dict(type="str"),
            flags=dict(type="list", elements="str", default=[]),
            infra_ref=dict(type="str"),
            **DIR_ARGS,
            **mechanisms.args(),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        mechanism = mechanisms.get(p["mechanism"])
        result = mechanism.snapshot(p, mechanism.runner(module), module.check_mode)
    except (ReleaseError, MechanismError, OSError) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
