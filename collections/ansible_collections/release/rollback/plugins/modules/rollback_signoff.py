#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: rollback_signoff
short_description: Record the Release Manager's sign-off of a finished rollback
version_added: "1.0.0"
description:
  - Confirms a rollback complete, as C(release-rollback signoff) does and with the same code; for an AWX
    workflow, run it as the job template after the approval node that follows validation.
  - Writes C(signoff.json) into O(run_dir), appends C(signoff.recorded) to the audit trail, and rewrites the
    report, which says "awaiting sign-off" until then.
  - A blocked or aborted rollback cannot be signed off; a partially completed one only with O(accept_gaps).
  - Runs on the controller.
options:
  run_dir:
    description: The run directory (it holds report.json).
    type: path
    required: true
  by:
    description: Who signs off.
    type: str
    required: true
  role:
    description: In what role.
    type: str
    default: release manager
  note:
    description: A note recorded with the sign-off.
    type: str
    default: ""
  accept_gaps:
    description: Sign off a partially completed rollback, accepting the known limitations in its report.
    type: bool
    default: false
requirements:
  - Python 3 on the host; the module runs no external command.
attributes:
  check_mode:
    description: Can run in check mode and return the changed status prediction without modifying the target.
    support: none
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
- name: Sign the rollback off
  release.rollback.rollback_signoff:
    run_dir: /var/lib/rollback/runs/20261126T101500Z
    by: Rita
"""

RETURN = r"""
signoff:
  description: The sign-off record (by, role, time, note, exit_state, accepted_gaps, plan_hash).
  returned: success
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.release.rollback.plugins.module_utils import followup


def main():
    module = AnsibleModule(
        argument_spec=dict(
            run_dir=dict(type="path", required=True),
            by=dict(type="str", required=True),
            role=dict(type="str", default="release manager"),
            note=dict(type="str", default=""),
            accept_gaps=dict(type="bool", default=False),
        ),
        supports_check_mode=False,
    )
    p = module.params
    try:
        record = followup.signoff(p["run_dir"], p["by"], p["role"], p["note"], p["accept_gaps"])
    except followup.SignoffError as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:
        module.fail_json(msg="the sign-off could not be written to %s: %s" % (p["run_dir"], exc))
    module.exit_json(changed=True, signoff=record)


if __name__ == "__main__":
    main()
