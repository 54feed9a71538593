#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: app_service
short_description: Restart an application and verify its health and version in one round trip
version_added: "1.0.0"
description:
  - Optionally restarts the application with its service manager, then polls its health URL and
    its version URL until the health check answers 2xx and the version equals O(expect_version),
    or the retries run out.
  - With O(restart=false) it only verifies; the validate stage uses it that way.
options:
  restart:
    description: Restart the application before verifying.
    type: bool
    default: false
  only_if_unhealthy:
    description: With O(restart=true), check once first and restart only when the check fails (idempotent re-runs).
    type: bool
    default: false
  expect_version:
    description: The version the application must report.
    type: str
  app_root:
    description:
      - With O(release) and no O(version_url), check that C(<app_root>/current/REVISION) equals
        C(<app_root>/releases/<release>/REVISION) (the deployed revision is the target's).
    type: path
  release:
    description: The release whose C(REVISION) the live one must equal.
    type: str
extends_documentation_fragment:
  - release.rollback.service
requirements:
  - C(systemctl) on the host with O(manager=systemd) (or C(auto) with O(service) set).
  - C(supervisorctl) (O(supervisorctl)) on the host with O(manager=supervisor).
  - The commands given in O(restart_command), O(stop_command) and O(start_command) with O(manager=command).
attributes:
  check_mode:
    description: Can run in check mode and return the changed status prediction without modifying the target.
    support: full
    details:
      - Nothing is restarted. When no restart would be needed, the health and version URLs are read once and
        reported without being judged (RV(judged) is false); a host that would be restarted is not read.
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
- name: Restart and verify
  release.rollback.app_service:
    restart: true
    restart_command: [/srv/shop/bin/service, restart]
    health_url: http://127.0.0.1:8080/health
    version_url: http://127.0.0.1:8080/version
    expect_version: "20261120090000Z"
"""

RETURN = r"""
restarted:
  description: Whether the application was restarted.
  returned: always
  type: bool
health:
  description: The last health status code seen, or the error.
  returned: always
  type: raw
version:
  description: The last version the application reported.
  returned: always
  type: str
attempts:
  description: How many polls it took.
  returned: always
  type: int
judged:
  description: False in check mode, where what the application answers is reported and never fails the task.
  returned: in check mode
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.release.rollback.plugins.module_utils.service import (
    SERVICE_ARGS,
    argument_problem,
    restart_and_verify,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            SERVICE_ARGS,
            restart=dict(type="bool", default=False),
            only_if_unhealthy=dict(type="bool", default=False),
            expect_version=dict(type="str"),
            app_root=dict(type="path"),
            release=dict(type="str"),
        ),
        required_if=[
            ("manager", "systemd", ("service",)),
            ("manager", "supervisor", ("service",)),
        ],
        supports_check_mode=True,
    )
    p = module.params
    problem = argument_problem(p)
    if problem:
        module.fail_json(msg=problem)
    result, failure = restart_and_verify(p, module.run_command, check_mode=module.check_mode)
    if failure:
        module.fail_json(msg=failure, **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
