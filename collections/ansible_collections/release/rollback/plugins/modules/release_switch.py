#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: release_switch
short_description: Switch a host's live release back atomically and restore its configuration
version_added: "1.0.0"
description:
  - Points C(current) at O(target) with a temporary link and a rename, keeping the link style found
    (relative stays relative, absolute stays absolute). C(shared/) is never touched.
  - Restores the configuration files kept outside the release from the target release's snapshot
    (C(<app_root>/snapshots/<release>/files/<absolute path>)), keeping the current file aside as
    C(<path>.rolled-back-<release>).
  - Marks the rolled-back release C(ROLLED_BACK) (kept, not deleted, unless O(remove_rolled_back)) so that
    later rollbacks skip it.
  - On a Capistrano layout appends C(<user> rolled back to release <target>) to C(<app_root>/revisions.log).
  - With O(lock) takes the host's lock file C(<app_root>/.rollback.lock) for O(run_id) before changing
    anything, and keeps it (release it with M(release.rollback.release_lock) once the host is verified).
  - Idempotent; supports check mode and diff mode. One round trip per host.
extends_documentation_fragment:
  - release.rollback.releases
  - release.rollback.releases.layout
  - release.rollback.releases.switch
requirements:
  - Python 3 on the host; the module runs no external command.
attributes:
  check_mode:
    description: Can run in check mode and return the changed status prediction without modifying the target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode) when in diff mode.
    support: full
    details:
      - Returns the C(current) link's target before and after.
  platform:
    description: Target OS/families that can be operated against.
    support: N/A
    platforms: posix
author:
  - release-rollback contributors (@release-rollback)
"""

EXAMPLES = r"""
- name: Switch back to the previous release
  release.rollback.release_switch:
    app_root: /srv/shop
    target: "20261120090000Z"
    config_files: [/etc/shop/app.conf]
"""

RETURN = r"""
from:
  description: The release that was live before.
  returned: success
  type: str
to:
  description: The release now live.
  returned: success
  type: str
link:
  description: The link text of C(current) afterwards.
  returned: success and not check mode
  type: str
config_restored:
  description: Configuration files restored from the snapshot.
  returned: success
  type: list
  elements: str
revisions_log:
  description: The line appended to Capistrano's C(revisions.log), or null.
  returned: success
  type: str
removed:
  description: The rolled-back release that was deleted, or null.
  returned: success
  type: str
locked:
  description: Whether this call took the host's lock.
  returned: success
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.release.rollback.plugins.module_utils.releases import SWITCH_ARGS, ReleaseError, switch_with


def main():
    module = AnsibleModule(
        argument_spec=SWITCH_ARGS,
        supports_check_mode=True,
    )
    p = module.params
    try:
        result = switch_with(p, check_mode=module.check_mode)
    except (ReleaseError, OSError) as exc:
        module.fail_json(msg=str(exc))
    diff = result.pop("diff")
    if module._diff and diff:
        result["diff"] = diff
    module.exit_json(**result)


if __name__ == "__main__":
    main()
