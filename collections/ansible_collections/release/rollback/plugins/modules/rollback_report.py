#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: rollback_report
short_description: Write the rollback report and record the release as rolled back
version_added: "0.1.0"
description:
  - Builds the report from the plan, its approval and every stage result with the renderer the
    driver uses too, writes C(report.json) and C(report.md) into O(run_dir), and appends the release's
    fate to the release record that later plans read.
  - Runs on the controller.
options:
  run_dir:
    description: The run directory.
    type: path
    required: true
  plan:
    description: The approved plan.
    type: dict
    required: true
  approval:
    description: The approval record.
    type: dict
  results:
    description: Stage name to published stage result.
    type: dict
    required: true
  record_file:
    description: The release record (JSON lines); empty to skip recording.
    type: path
  audit_stages:
    description: Append one audit entry per stage result (for runs without the driver, which audits itself).
    type: bool
    default: false
author:
  - release-rollback contributors (@release-rollback)
"""

EXAMPLES = r"""
- name: Write the report
  release.rollback.rollback_report:
    run_dir: /var/lib/rollback/runs/20261126T101500Z
    plan: "{{ rollback_plan }}"
    results: "{{ rollback_results }}"
"""

RETURN = r"""
exit_state:
  description: completed, partially completed, blocked or aborted.
  returned: success
  type: str
report:
  description: Paths of the written report files.
  returned: success
  type: dict
recorded:
  description: Whether the release record was updated.
  returned: success
  type: bool
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.release.rollback.plugins.module_utils import audit, report


def main():
    module = AnsibleModule(
        argument_spec=dict(
            run_dir=dict(type="path", required=True),
            plan=dict(type="dict", required=True),
            approval=dict(type="dict"),
            results=dict(type="dict", required=True),
            record_file=dict(type="path"),
            audit_stages=dict(type="bool", default=False),
        ),
        supports_check_mode=False,
    )
    p = module.params
    results = dict(p["results"])
    results.setdefault("report", {"stage": "report", "status": "ok", "summary": "this report", "changed": True})
    rep = report.build(p["plan"], p["approval"], results)
    try:
        paths = report.write(p["run_dir"], rep)
        recorded = report.record_release(p["record_file"], rep)
        trail = os.path.join(p["run_dir"], "audit.jsonl")
        if p["audit_stages"]:
            for step in rep["steps"]:
                audit.append(
                    trail,
                    "stage.result",
                    stage=step["stage"],
                    status=step["status"],
                    summary=step.get("summary"),
                )
            audit.append(trail, "run.end", exit_state=rep["exit_state"])
        audit.append(trail, "report.written", exit_state=rep["exit_state"], report=paths["json"], recorded=recorded)
    except OSError as exc:
        module.fail_json(msg="the report could not be written to %s: %s" % (p["run_dir"], exc))
    module.exit_json(
        changed=True,
        exit_state=rep["exit_state"],
        exit_code=rep["exit_code"],
        report=paths,
        recorded=recorded,
    )


if __name__ == "__main__":
    main()
