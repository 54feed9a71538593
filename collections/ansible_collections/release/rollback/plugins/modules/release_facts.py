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
  - One round trip per host. It only reads. To take the host's lock in the same round trip, use
    M(release.rollback.release_claim); to take or give back the lock alone, M(release.rollback.release_lock).
options:
  app_root:
    description: The deploy_to directory holding C(releases/), C(current) and C(shared/).
    type: path
    required: true
  run_id:
    description: The rollback run asking; a lock held by this run does not count as a problem.
    type: str
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
      - Reads the host only, in check mode and out of it.
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
  description: Whether O(run_id) holds the host's lock.
  returned: success
  type: bool
lock_problem:
  description: One sentence naming the lock's holder when another run holds it, or null.
  returned: success
  type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.release.rollback.plugins.module_utils.code_mechanisms import registry as mechanisms
from ansible_collections.release.rollback.plugins.module_utils.releases import DISCOVERY_ARGS, exit_discovery


def main():
    module = AnsibleModule(argument_spec=dict(DISCOVERY_ARGS, **mechanisms.args()), supports_check_mode=True)
    exit_discovery(module, mechanisms.read_host(module))


if __name__ == "__main__":
    main()
