#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: release_facts
short_description: Discover the live and the previous known-good release on a host
version_added: "1.0.0"
description:
  - Reads the live release with C(readlink current), lists the releases by name (as versions when
    they look like versions), never by mtime, and picks the newest release older than the live one
    that is not marked C(DEPLOY_UNFINISHED), C(ROLLED_BACK) or C(KNOWN_BAD).
  - A release is a real directory directly inside C(releases/) whose name passes the manifest's
    release-name rules; other entries are returned in RV(passed_over). A C(current) that points
    outside C(releases/), or at a link or a hostile name in it, fails the host.
  - One round trip per host.
options:
  app_root:
    description: The deploy_to directory holding C(releases/), C(current) and C(shared/).
    type: path
    required: true
  run_id:
    description: The rollback run asking; a lock held by this run does not count as a problem.
    type: str
  lock:
    description:
      - Also take the host's lock C(<app_root>/.rollback.lock) for O(run_id) in the same round trip,
        unless another run holds it (then RV(lock_problem) says who and nothing is taken).
      - The assess stage does this when the same run goes on to roll the hosts back, so that the
        code stage needs no separate lock pass. Taking the lock is not reported as a change.
    type: bool
    default: false
  operator:
    description: Who runs the rollback, written into the lock.
    type: str
  break_stale_lock:
    description: With O(lock), replace a lock older than an hour held by another run.
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
requirements:
  - Python 3 on the host; the module runs no external command.
attributes:
  check_mode:
    description: Can run in check mode and return the changed status prediction without modifying the target.
    support: full
    details:
      - Reads the host only; with O(lock) the lock is not taken (nor a stale one broken) in check mode.
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
- name: Find the live and previous releases
  release.rollback.release_facts:
    app_root: /srv/shop
  register: releases
"""

RETURN = r"""
ansible_facts:
  description: Facts set on the host.
  returned: success
  type: dict
  contains:
    rollback_host_result_assess:
      description: >-
        The host's assess result for the plan, every other value returned here (with
        RV(skipped_releases) as C(skipped)).
      type: dict
live:
  description: The live release (the basename of the C(current) link target).
  returned: success
  type: str
  sample: "20261126090000Z"
previous:
  description: The previous known-good release, or null when there is none.
  returned: success
  type: str
releases:
  description: Every release on the host, oldest first.
  returned: success
  type: list
  elements: str
layout:
  description: The detected or forced layout.
  returned: success
  type: str
link:
  description: The raw link text of C(current).
  returned: success
  type: str
link_style:
  description: C(relative) or C(absolute).
  returned: success
  type: str
skipped_releases:
  description: Older releases passed over because they are marked unfinished, rolled back or known-bad.
  returned: success
  type: list
  elements: str
passed_over:
  description:
    - Entries of C(releases/) that are not releases, each with why (name as shown, escaped, to reason).
    - A link (to a directory anywhere) or a name that fails the manifest's release-name rules (a newline,
      C(/), shell metacharacters) is never a release, never the previous release and never a target.
  returned: success
  type: dict
marks:
  description: Release name to the marks found in it.
  returned: success
  type: dict
detected_layout:
  description: The layout the files on the host look like (also when O(layout) forces one).
  returned: success
  type: str
lock:
  description: The holder of C(<app_root>/.rollback.lock) (run_id, operator, time, host, age_seconds, stale), or null.
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
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.release.rollback.plugins.module_utils.releases import (
    DIR_ARGS,
    LAYOUT_ARGS,
    ReleaseError,
    acquire_lock,
    discover,
    release_lock,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            DIR_ARGS,
            **LAYOUT_ARGS,
            app_root=dict(type="path", required=True),
            run_id=dict(type="str"),
            lock=dict(type="bool", default=False),
            operator=dict(type="str"),
            break_stale_lock=dict(type="bool", default=False),
            break_lock_of=dict(type="list", elements="str", default=[]),
        ),
        required_if=[("lock", True, ("run_id",))],
        supports_check_mode=True,
    )
    p = module.params
    try:
        info = discover(
            p["app_root"],
            layout=p["layout"],
            releases_dir=p["releases_dir"],
            current=p["current_dir"],
            run_id=p["run_id"],
        )
    except (ReleaseError, OSError) as exc:
        module.fail_json(msg=str(exc))
    holder = info["lock"]
    info["locked"] = bool(holder and p["run_id"] and holder.get("run_id") == p["run_id"])
    info["lock_broken"] = None
    breakable = bool(holder and holder.get("run_id") and holder["run_id"] in p["break_lock_of"])
    # The controller checked that this holder cannot be working any more: its lock goes at once.
    if breakable and not module.check_mode and release_lock(info["app_root"], holder["run_id"]):
        info["lock_broken"], info["lock"], info["lock_problem"] = holder, None, None
        holder = None
    stale_breakable = bool(p["break_stale_lock"] and holder and holder.get("stale"))
    if p["lock"] and not info["locked"] and (not info["lock_problem"] or stale_breakable) and not module.check_mode:
        try:
            acquire_lock(info["app_root"], p["run_id"], operator=p["operator"], break_stale=p["break_stale_lock"])
            info["locked"], info["lock_problem"] = True, None
        except (ReleaseError, OSError) as exc:  # taken meanwhile by another run
            info["lock_problem"] = str(exc)
    # The lock is bookkeeping of this run, not a change of the host: the assess stage changes nothing.
    result = dict(info)
    # A truthy "skipped" is Ansible's own mark of a skipped task (whose facts are dropped): the list
    # of passed-over releases goes out as skipped_releases; the fact keeps it as "skipped".
    result["skipped_releases"] = result.pop("skipped")
    module.exit_json(changed=False, ansible_facts={"rollback_host_result_assess": info}, **result)


if __name__ == "__main__":
    main()
