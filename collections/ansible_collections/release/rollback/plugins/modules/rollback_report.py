#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: rollback_report
short_description: Write the rollback report and record the release as rolled back
version_added: "1.0.0"
description:
  - Builds the report from the plan, its approval and every stage result with the renderer the
    driver uses too, writes C(report.json), C(report.md) and C(report.html) into O(run_dir), and appends the release's
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
  followup:
    description:
      - Notify the channels of the manifest's C(notify) section of the exit state and file the RCA ticket
        of its C(rca) section (runs without the driver, which does this itself).
      - A channel or tracker that cannot be reached never fails the task; the report says "RCA pending".
    type: bool
    default: false
  manifest:
    description: The release manifest (for its C(notify) and C(rca) sections).
    type: dict
  secrets:
    description:
      - Secrets named by the C(*_env) keys of the C(notify) and C(rca) sections (e.g. from Ansible Vault);
        a name missing here is read from the controller's environment.
    type: dict
  dry_run:
    description:
      - The results are those of a dry run (C(--check)). The report is written to C(dry-run/) in O(run_dir) instead,
        titled as a dry run; no release is recorded, nothing is audited, nobody is notified and no RCA ticket is
        opened. O(record_file), O(audit_stages) and O(followup) are ignored.
      - In check mode, even a dry run's report is not written; the stage role runs this task with
        C(check_mode=false) and O(dry_run=true) when the play runs in check mode.
    type: bool
    default: false
requirements:
  - Python 3 on the host; the module runs no external command.
attributes:
  check_mode:
    description: Can run in check mode and return the changed status prediction without modifying the target.
    support: full
    details:
      - Builds the report and returns its exit state; writes no file, records, audits and notifies nothing.
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
  description: Paths of the written report files (none in check mode).
  returned: success
  type: dict
dry_run:
  description: Whether the report written is a dry run's.
  returned: success
  type: bool
recorded:
  description: Whether the release record was updated.
  returned: success
  type: bool
rca:
  description: The RCA ticket record (status filed or pending, tracker, key, url), when followup ran.
  returned: when followup is true and an rca section is configured
  type: dict
notifications:
  description: One outcome per notification sent (time, event, channel, outcome).
  returned: success
  type: list
  elements: dict
"""


from ansible.module_utils.basic import AnsibleModule
from ansible_collections.release.rollback.plugins.module_utils import followup, manifest, report


def main():
    module = AnsibleModule(
        argument_spec=dict(
            run_dir=dict(type="path", required=True),
            plan=dict(type="dict", required=True),
            approval=dict(type="dict"),
            results=dict(type="dict", required=True),
            record_file=dict(type="path"),
            audit_stages=dict(type="bool", default=False),
            followup=dict(type="bool", default=False),
            manifest=dict(type="dict"),
            secrets=dict(type="dict", no_log=True),
            dry_run=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    p = module.params
    results = report.with_report_done(p["results"])
    nothing = dict(recorded=False, rca=None, notifications=[], dry_run=p["dry_run"])
    if module.check_mode:
        rep = report.build_for_run(p["run_dir"], p["plan"], p["approval"], results, dry_run=p["dry_run"])
        module.exit_json(changed=True, exit_state=rep["exit_state"], exit_code=rep["exit_code"], report={}, **nothing)
    if p["dry_run"]:
        try:
            rep, paths = report.write_dry_run_report(p["run_dir"], p["plan"], p["approval"], results)
        except OSError as exc:
            module.fail_json(msg="the dry run's report could not be written to %s: %s" % (p["run_dir"], exc))
        module.exit_json(
            changed=True, exit_state=rep["exit_state"], exit_code=rep["exit_code"], report=paths, **nothing
        )
    try:
        rep, paths, recorded = report.write_run_report(
            p["run_dir"], p["plan"], p["approval"], results, p["record_file"], audit_stages=p["audit_stages"]
        )
        done = {"notifications": [], "rca": None}
        if p["followup"]:
            try:
                parsed = manifest.parse_manifest(p["manifest"])
            except manifest.ManifestError as exc:
                module.fail_json(msg="bad manifest: %s" % exc)
            done = followup.after_run(p["run_dir"], parsed, rep, secrets=p["secrets"])
            rep = report.build_for_run(p["run_dir"], p["plan"], p["approval"], results)
            report.write(p["run_dir"], rep)
    except OSError as exc:
        module.fail_json(msg="the report could not be written to %s: %s" % (p["run_dir"], exc))
    module.exit_json(
        changed=True,
        exit_state=rep["exit_state"],
        exit_code=rep["exit_code"],
        report=paths,
        recorded=recorded,
        rca=done["rca"],
        notifications=done["notifications"],
        dry_run=False,
    )


if __name__ == "__main__":
    main()
