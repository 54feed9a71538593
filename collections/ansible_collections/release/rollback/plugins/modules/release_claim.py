#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: release_claim
short_description: Discover a host's releases and take its rollback lock, in one round trip
version_added: "1.0.0"
description:
  - Reads the host exactly as M(release.rollback.release_facts) does and, in the same round trip, takes
    the host's lock C(<app_root>/.rollback.lock) for O(run_id), so that the code stage needs no lock pass
    of its own. The assess stage uses it when the run goes on to roll the hosts back.
  - Another run's lock is never taken; RV(lock_problem) names its holder and nothing changes. A lock of a
    run named in O(break_lock_of) is replaced at once; with O(break_stale_lock), a lock older than an
    hour is.
  - Taking or replacing a lock is reported as a change.
options:
  app_root:
    description: The deploy_to directory holding C(releases/), C(current) and C(shared/).
    type: path
    required: true
  run_id:
    description: The rollback run that takes the lock.
    type: str
    required: true
  lock:
    description: Take the lock. With V(false) only the locks of O(break_lock_of) are replaced.
    type: bool
    default: true
  operator:
    description: Who runs the rollback, written into the lock.
    type: str
  break_stale_lock:
    description: Replace a lock older than an hour held by another run.
    type: bool
    default: false
  break_lock_of:
    description:
      - Runs whose locks may be replaced at once, whatever their age, because the controller checked that
        they cannot be working any more (their driver is gone on that machine, or the run is final).
      - The driver passes them with C(--break-lock); a replaced holder is returned in RV(lock_broken).
    type: list
    elements: str
    default: []
extends_documentation_fragment:
  - release.rollback.releases
  - release.rollback.releases.layout
  - release.rollback.code_mechanism
requirements:
  - Python 3 on the host; the module runs no external command.
attributes:
  check_mode:
    description: Can run in check mode and return the changed status prediction without modifying the target.
    support: full
    details:
      - In check mode no lock is taken or replaced; the result's C(changed) says whether one would be.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode) when in diff mode.
    support: none
  platform:
    description: Target OS/families that can be operated against.
    support: N/A
    platforms: posix
seealso:
  - module: release.rollback.release_facts
  - module: release.rollback.release_lock
author:
  - release-rollback contributors (@release-rollback)
"""

EXAMPLES = r"""
- name: Find the live and previous releases and lock the host for this run
  release.rollback.release_claim:
    app_root: /srv/shop
    run_id: "{{ rollback_run_id }}"
    operator: alice
  register: claimed
"""

RETURN = r"""
ansible_facts:
  description: The fact C(rollback_host_result_assess), as M(release.rollback.release_facts) sets it.
  returned: success
  type: dict
locked:
  description: Whether O(run_id) holds the host's lock after this call.
  returned: success
  type: bool
lock_broken:
  description: The holder of the lock this call replaced (a run named in O(break_lock_of)), or null.
  returned: success
  type: dict
lock_problem:
  description: One sentence naming the lock's holder when another run holds it, or null.
  returned: success
  type: str
live:
  description: The live release; the other discovery values are those of M(release.rollback.release_facts).
  returned: success
  type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.release.rollback.plugins.module_utils.code_mechanisms import registry as mechanisms
from ansible_collections.release.rollback.plugins.module_utils.releases import (
    DISCOVERY_ARGS,
    claim,
    exit_discovery,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            DISCOVERY_ARGS,
            run_id=dict(type="str", required=True),
            lock=dict(type="bool", default=True),
            operator=dict(type="str"),
            break_stale_lock=dict(type="bool", default=False),
            break_lock_of=dict(type="list", elements="str", default=[]),
            **mechanisms.args(),
        ),
        supports_check_mode=True,
    )
    p = module.params
    info = mechanisms.read_host(module)
    changed = claim(
        info,
        p["run_id"],
        operator=p["operator"],
        take=p["lock"],
        break_stale=p["break_stale_lock"],
        break_lock_of=p["break_lock_of"],
        check_mode=module.check_mode,
    )
    exit_discovery(module, info, changed=changed)


if __name__ == "__main__":
    main()
