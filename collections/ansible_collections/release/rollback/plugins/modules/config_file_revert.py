#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: config_file_revert
short_description: Restore a versioned infrastructure config, validated before it is applied, then reload
version_added: "0.1.0"
description:
  - Copies the previous release's snapshot next to the live file, runs O(validate_command) on the
    copy, and only when it passes puts it in place with a rename and runs O(reload_command).
  - An invalid snapshot is never applied; the live file keeps serving.
  - If the reload fails, the previous live file is put back and reloaded again.
options:
  path:
    description: The live configuration file.
    type: path
    required: true
  snapshot:
    description: The previous release's version of the file.
    type: path
    required: true
  validate_command:
    description:
      - Command (a list, or a string split like a shell would) that checks a candidate file.
      - C({path}) is replaced by the candidate's path.
    type: raw
  reload_command:
    description: Command (a list, or a string split like a shell would) that makes the server load the restored file.
    type: raw
author:
  - release-rollback contributors (@release-rollback)
"""

EXAMPLES = r"""
- name: Restore the load-balancer upstreams
  release.rollback.config_file_revert:
    path: /etc/nginx/conf.d/upstreams.conf
    snapshot: /etc/nginx/releases/1.4.1/upstreams.conf
    validate_command: [nginx, -t]
    reload_command: [nginx, -s, reload]
"""

RETURN = r"""
restored:
  description: Whether the file was replaced.
  returned: success
  type: bool
kept:
  description: Where the replaced live file was kept.
  returned: when restored
  type: str
"""

import os
import shlex
import shutil

from ansible.module_utils.basic import AnsibleModule


def _run(module, cmd, path=None):
    argv = [a.replace("{path}", path) if path else a for a in _argv(cmd)]
    return module.run_command(argv)


def _argv(value):
    """A command given as a list, or as a string split the way a shell would (no shell runs it)."""
    if value is None or isinstance(value, list):
        return value
    return shlex.split(str(value))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            snapshot=dict(type="path", required=True),
            validate_command=dict(type="raw"),
            reload_command=dict(type="raw"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if not os.path.isfile(p["snapshot"]):
        module.fail_json(msg="the snapshot %s does not exist: nothing to restore the config from" % p["snapshot"])
    with open(p["snapshot"], "rb") as fh:
        wanted = fh.read()
    live = None
    if os.path.exists(p["path"]):
        with open(p["path"], "rb") as fh:
            live = fh.read()
    if live == wanted:
        module.exit_json(changed=False, restored=False, path=p["path"], snapshot=p["snapshot"])
    candidate = p["path"] + ".rollback-candidate"
    shutil.copy2(p["snapshot"], candidate)
    try:
        if p["validate_command"]:
            rc, out, err = _run(module, p["validate_command"], candidate)
            if rc != 0:
                module.fail_json(
                    msg="the snapshot %s failed validation, so it was not applied and the live config keeps "
                    "serving: %s" % (p["snapshot"], (err or out).strip()[-500:]),
                    restored=False,
                )
        if module.check_mode:
            module.exit_json(changed=True, restored=False, path=p["path"], snapshot=p["snapshot"])
        kept = None
        if live is not None:
            kept = p["path"] + ".rolled-back"
            shutil.copy2(p["path"], kept)
        os.replace(candidate, p["path"])
    finally:
        if os.path.exists(candidate):
            os.unlink(candidate)
    if p["reload_command"]:
        rc, out, err = _run(module, p["reload_command"])
        if rc != 0:
            if kept:
                shutil.copy2(kept, p["path"])
                _run(module, p["reload_command"])
            module.fail_json(
                msg="the reload failed, so the previous live config was put back: %s" % (err or out).strip()[-500:],
                restored=False,
            )
    module.exit_json(changed=True, restored=True, kept=kept, path=p["path"], snapshot=p["snapshot"])


if __name__ == "__main__":
    main()
