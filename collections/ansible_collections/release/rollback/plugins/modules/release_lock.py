#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: release_lock
short_description: Take or release the host-side lock of an application's deploy directory
version_added: "1.0.0"
description:
  - The lock is the file C(<app_root>/.rollback.lock) holding the run id, the operator, the time and
    the host. While one run holds it, another rollback (or a deploy that honours it) is refused with
    the holder named. A lock older than an hour is reported as stale, with its holder.
  - O(state=present) takes the lock for O(run_id) (taking it again for the same run changes nothing);
    O(state=absent) removes it only when O(run_id) holds it.
options:
  app_root:
    description: The deploy_to directory.
    type: path
    required: true
  run_id:
    description: The run that takes or releases the lock.
    type: str
    required: true
  operator:
    description: Who runs it, written into the lock.
    type: str
  state:
    description: Take (C(present)) or release (C(absent)) the lock.
    type: str
    choices: [present, absent]
    default: present
  break_stale:
    description: Replace a stale lock of another run.
    type: bool
    default: false
requirements:
  - Python 3 on the host; the module runs no external command.
attributes:
  check_mode:
    description: Can run in check mode and return the changed status prediction without modifying the target.
    support: full
    details:
      - Reports whether the lock would be taken or given back, without writing it.
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
- name: Release the lock once the host is verified
  release.rollback.release_lock:
    app_root: /srv/shop
    run_id: "{{ rollback_run_id }}"
    state: absent

- name: A deploy that honours the lock (ansistrano before_setup hook)
  release.rollback.release_lock:
    app_root: "{{ ansistrano_deploy_to }}"
    run_id: "deploy-{{ ansistrano_release_version }}"
    operator: "{{ lookup('ansible.builtin.env', 'USER') }}"
"""

RETURN = r"""
holder:
  description: The lock's holder before this call, or null.
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.release.rollback.plugins.module_utils.releases import (
    ReleaseError,
    acquire_lock,
    lock_problem,
    read_lock,
    release_lock,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            app_root=dict(type="path", required=True),
            run_id=dict(type="str", required=True),
            operator=dict(type="str"),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            break_stale=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    p = module.params
    holder = read_lock(p["app_root"])
    if p["state"] == "absent":
        changed = bool(holder and holder.get("run_id") == p["run_id"])
        if changed and not module.check_mode:
            release_lock(p["app_root"], p["run_id"])
        module.exit_json(changed=changed, holder=holder)
    if module.check_mode:
        problem = lock_problem(holder, p["run_id"])
        if problem and not (p["break_stale"] and holder.get("stale")):
            module.fail_json(msg=problem, holder=holder)
        module.exit_json(changed=not (holder and holder.get("run_id") == p["run_id"]), holder=holder)
    try:
        changed = acquire_lock(p["app_root"], p["run_id"], operator=p["operator"], break_stale=p["break_stale"])
    except (ReleaseError, OSError) as exc:
        module.fail_json(msg=str(exc), holder=holder)
    module.exit_json(changed=changed, holder=holder)


if __name__ == "__main__":
    main()
