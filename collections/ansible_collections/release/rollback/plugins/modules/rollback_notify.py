#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: rollback_notify
short_description: Tell the rollback's stakeholders that it started (or any other event)
version_added: "1.0.0"
description:
  - Sends one notification to the channels of the manifest's C(notify) section (Slack incoming
    webhook, e-mail over SMTP, generic webhook) with the implementation the driver uses, and records
    each outcome in the run's audit trail.
  - A channel that cannot be reached never fails the task; its outcome says why.
  - Runs on the controller.
options:
  run_dir:
    description: The run directory (for the audit trail and the report link).
    type: path
    required: true
  event:
    description: What the notification is about.
    type: str
    choices: [started, completed, partially completed, blocked, aborted]
    default: started
  plan:
    description: The plan (application, from and to release, reason).
    type: dict
    required: true
  approval:
    description: The approval record.
    type: dict
  manifest:
    description: The release manifest (its C(notify) section).
    type: dict
  secrets:
    description: Secrets named by the C(*_env) keys (e.g. from Ansible Vault); others come from the environment.
    type: dict
requirements:
  - Python 3 on the host; the module runs no external command. The notify channels' URLs must be reachable
    from the host.
attributes:
  check_mode:
    description: Can run in check mode and return the changed status prediction without modifying the target.
    support: full
    details:
      - Sends nothing.
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
- name: Announce the rollback
  release.rollback.rollback_notify:
    run_dir: "{{ rollback_run_dir }}"
    plan: "{{ rollback_plan }}"
    manifest: "{{ rollback_manifest }}"
"""

RETURN = r"""
notifications:
  description: One outcome per channel (time, event, channel, kind, outcome).
  returned: success
  type: list
  elements: dict
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.release.rollback.plugins.module_utils import followup, manifest, report


def main():
    module = AnsibleModule(
        argument_spec=dict(
            run_dir=dict(type="path", required=True),
            event=dict(
                type="str",
                default="started",
                choices=["started", "completed", "partially completed", "blocked", "aborted"],
            ),
            plan=dict(type="dict", required=True),
            approval=dict(type="dict"),
            manifest=dict(type="dict"),
            secrets=dict(type="dict", no_log=True),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        parsed = manifest.parse_manifest(p["manifest"])
    except manifest.ManifestError as exc:
        module.fail_json(msg="bad manifest: %s" % exc)
    if module.check_mode or not parsed.get("notify"):
        module.exit_json(changed=False, notifications=[])
    rep = report.build(p["plan"], p["approval"], {}, run_id=os.path.basename(os.path.normpath(p["run_dir"])))
    os.makedirs(p["run_dir"], exist_ok=True)
    sent = followup.announce(p["run_dir"], parsed["notify"], p["event"], rep, secrets=p["secrets"])
    module.exit_json(changed=bool(sent), notifications=sent)


if __name__ == "__main__":
    main()
