#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: terraform_revert
short_description: Plan the previous release's Terraform/OpenTofu configuration, summarise it, apply it
version_added: "1.0.0"
description:
  - Runs C(init), C(plan -detailed-exitcode -out) and C(show -json) in O(project_path) (the previous release's
    configuration, checked out), and returns the plan's summary (resources to add, change and destroy).
  - A plan that destroys resources (a delete or a replace) is refused unless O(allow_destroy) is true, which the
    infrastructure role sets only when the approval covers destructive steps. Nothing is applied then.
  - Otherwise applies exactly the saved plan (C(apply PLANFILE)), so what runs is what was summarised.
  - Works with C(terraform) and C(tofu), which take the same verbs.
options:
  project_path:
    description: The directory with the previous release's configuration.
    type: path
    required: true
  binary:
    description: The command (C(terraform), C(tofu), or an absolute path).
    type: str
    default: terraform
  workspace:
    description: Workspace to select before planning.
    type: str
  init:
    description: Run C(init -input=false) first.
    type: bool
    default: true
  allow_destroy:
    description: Apply a plan that destroys resources.
    type: bool
    default: false
requirements:
  - C(terraform) or C(tofu) (O(binary)) on the host.
attributes:
  check_mode:
    description: Can run in check mode and return the changed status prediction without modifying the target.
    support: full
    details:
      - Nothing is applied and nothing is prepared. C(init) does not run (O(init) is ignored), the workspace is
        not selected (C(TF_WORKSPACE) names it for the plan instead), and C(plan) runs with C(-lock=false), so
        the state lock is not taken.
      - O(project_path) must already be initialised; the plan file goes to the module's temporary directory,
        which is removed afterwards.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode) when in diff mode.
    support: full
    details:
      - Each resource the plan changes, with its actions.
  platform:
    description: Target OS/families that can be operated against.
    support: N/A
    platforms: posix
author:
  - release-rollback contributors (@release-rollback)
"""

EXAMPLES = r"""
- name: Apply the previous release's infrastructure, refusing destroys
  release.rollback.terraform_revert:
    project_path: /srv/infra/releases/1.4.1
    binary: tofu
"""

RETURN = r"""
plan_summary:
  description: Resources to add, change and destroy, and each resource's actions.
  returned: always
  type: dict
  sample:
    add: 0
    change: 1
    destroy: 1
    resources: [{"address": "aws_instance.canary", "actions": ["delete"]}]
applied:
  description: Whether the plan was applied.
  returned: always
  type: bool
version:
  description: The version of the binary.
  returned: always
  type: str
outputs:
  description: The outputs after the apply (values of sensitive outputs are hidden).
  returned: always
  type: dict
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule


def summarise(show):
    """Count adds, changes and destroys as Terraform's own "Plan:" line does (a replace is one of each)."""
    out = {"add": 0, "change": 0, "destroy": 0, "resources": []}
    for rc in show.get("resource_changes") or []:
        actions = list((rc.get("change") or {}).get("actions") or [])
        if actions in (["no-op"], ["read"], []):
            continue
        out["add"] += "create" in actions
        out["change"] += "update" in actions
        out["destroy"] += "delete" in actions
        out["resources"].append({"address": rc.get("address"), "actions": actions})
    return out


class Terraform:
    def __init__(self, module):
        self.module = module
        self.p = module.params
        self.summary = {"add": 0, "change": 0, "destroy": 0, "resources": []}
        self.version = None

    def run(self, *args, check=True):
        binary = self.p["binary"]
        path = binary if os.path.isabs(binary) else self.module.get_bin_path(binary)
        if not path:
            self.fail("%s is not on this host's PATH: install it or set infrastructure.binary" % binary)
        env = {}
        if self.module.check_mode and self.p["workspace"]:
            # Check mode selects no workspace (that writes .terraform/environment): the plan is told which.
            env["TF_WORKSPACE"] = self.p["workspace"]
        rc, out, err = self.module.run_command([path, *args], cwd=self.p["project_path"], environ_update=env)
        if check and rc != 0:
            self.fail("%s %s failed: %s" % (binary, args[0], (err or out).strip()[-800:]))
        return rc, out, err

    def fail(self, msg):
        self.module.fail_json(
            msg=msg,
            changed=False,
            applied=False,
            plan_summary=self.summary,
            version=self.version,
            project_path=self.p["project_path"],
            outputs={},
        )

    def main(self):
        p = self.p
        if not os.path.isdir(p["project_path"]):
            self.fail("the directory %s does not exist: check infrastructure.project_path" % p["project_path"])
        rc, out, _err = self.run("version", "-json", check=False)
        try:
            self.version = json.loads(out).get("terraform_version") if rc == 0 else None
        except ValueError:
            self.version = None
        check_mode = self.module.check_mode
        if p["init"] and not check_mode:
            self.run("init", "-input=false", "-no-color")
        if p["workspace"] and not check_mode:
            self.run("workspace", "select", "-no-color", p["workspace"])
        planfile = os.path.join(self.module.tmpdir, "rollback.tfplan")
        lock = "-lock=false" if check_mode else "-lock=true"
        rc, out, err = self.run(
            "plan", "-input=false", "-no-color", lock, "-detailed-exitcode", "-out=" + planfile, check=False
        )
        if rc not in (0, 2):
            why = (err or out).strip()[-800:]
            if check_mode and p["init"]:
                why += " (check mode runs no init: the directory must already be initialised)"
            self.fail("%s plan failed: %s" % (p["binary"], why))
        if rc == 2:
            _rc, out, _err = self.run("show", "-json", "-no-color", planfile)
            try:
                self.summary = summarise(json.loads(out))
            except ValueError:
                self.fail("%s show -json did not print JSON: is the binary terraform or tofu?" % p["binary"])
        if self.summary["destroy"] and not p["allow_destroy"]:
            doomed = [r["address"] for r in self.summary["resources"] if "delete" in r["actions"]]
            self.fail(
                "the plan destroys %d resource(s) (%s), and destroying needs an approval of destructive steps: "
                "approve the plan again with --destructive (release-rollback approve PLAN --approver NAME "
                "--destructive), then resume" % (self.summary["destroy"], ", ".join(doomed))
            )
        changes = bool(self.summary["resources"])
        applied = False
        if changes and not self.module.check_mode:
            self.run("apply", "-input=false", "-no-color", "-auto-approve", "-lock=true", planfile)
            applied = True
        outputs = {}
        rc, out, _err = self.run("output", "-json", "-no-color", check=False)
        if rc == 0:
            try:
                for name, value in (json.loads(out or "{}") or {}).items():
                    hidden = isinstance(value, dict) and value.get("sensitive")
                    outputs[name] = "(sensitive)" if hidden else (value or {}).get("value")
            except (ValueError, AttributeError):
                outputs = {}
        extra = {}
        if self.module._diff and changes:
            lines = "".join("%s: %s\n" % (r["address"], ", ".join(r["actions"])) for r in self.summary["resources"])
            extra["diff"] = {
                "before_header": "%s (live infrastructure)" % p["project_path"],
                "after_header": "%s (plan: %d to add, %d to change, %d to destroy)"
                % (p["project_path"], self.summary["add"], self.summary["change"], self.summary["destroy"]),
                "before": "",
                "after": lines,
            }
        self.module.exit_json(
            changed=changes,
            applied=applied,
            **extra,
            plan_summary=self.summary,
            version=self.version,
            project_path=p["project_path"],
            outputs=outputs,
        )


def main():
    module = AnsibleModule(
        argument_spec=dict(
            project_path=dict(type="path", required=True),
            binary=dict(type="str", default="terraform"),
            workspace=dict(type="str"),
            init=dict(type="bool", default=True),
            allow_destroy=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    Terraform(module).main()


if __name__ == "__main__":
    main()
