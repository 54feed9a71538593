#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: flagd_flags
short_description: Turn feature flags off deterministically in a flagd flag file and read them back
version_added: "0.1.0"
description:
  - Sets each flag C(ENABLED) with its off variant as C(defaultVariant) and no C(targeting), so every
    evaluation returns the off value (C(DISABLED) alone falls back to the application's code default).
  - Writes the file atomically, reads it back, and returns each flag's state before and after.
  - A file that is missing, unreadable or unwritable is reported with C(unavailable=true).
options:
  path:
    description: The flagd flag file.
    type: path
    required: true
  names:
    description: The flags to turn off.
    type: list
    elements: str
    required: true
author:
  - release-rollback contributors (@release-rollback)
"""

EXAMPLES = r"""
- name: Turn the release's flags off
  release.rollback.flagd_flags:
    path: /etc/flagd/flags.json
    names: [new-checkout]
"""

RETURN = r"""
flags:
  description: Flag name to C(before), C(after) and C(read_back) states.
  returned: success
  type: dict
unavailable:
  description: Whether the flag system itself could not be used.
  returned: failure
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.release.rollback.plugins.module_utils.flagd import FlagError, turn_off


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            names=dict(type="list", elements="str", required=True),
        ),
        supports_check_mode=True,
    )
    try:
        result = turn_off(module.params["path"], module.params["names"], check_mode=module.check_mode)
    except FlagError as exc:
        module.fail_json(msg=str(exc), unavailable=exc.unavailable)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
