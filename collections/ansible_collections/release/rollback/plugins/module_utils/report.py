# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rollback report: one builder and one renderer for the driver and the playbook path.

Pure Python, standard library only.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone

from ansible_collections.release.rollback.plugins.module_utils import stages as _stages

REPORT_SCHEMA = 1


def build(plan, approval, results, run_id=None, aborted=False, abort_reason=None, extra_limitations=None):
    """The report as data. ``results``: stage name -> published stage result."""
    plan = plan or {}
    results = results or {}
    state = _stages.exit_state(results, aborted=aborted)
    steps = []
    for entry in _stages.STAGES:
        name = entry["name"]
        res = results.get(name)
        if res is None:
            steps.append({"stage": name, "title": entry["title"], "status": "not run", "summary": "not reached"})
            continue
        steps.append(
            {
                "stage": name,
                "title": entry["title"],
                "status": res.get("status"),
                "summary": res.get("summary"),
                "started": res.get("started"),
                "ended": res.get("ended"),
                "changed": bool(res.get("changed")),
                "hosts": {
                    h: {"status": r.get("status"), "msg": r.get("msg")} for h, r in (res.get("hosts") or {}).items()
                },
            }
        )
    limitations = _stages.limitations(results) if state != _stages.COMPLETED else []
    limitations += list(extra_limitations or [])
    if aborted:
        limitations.insert(0, "aborted: %s" % (abort_reason or "cancelled by the operator"))
    flags = (results.get("feature_flags") or {}).get("flags")
    code = results.get("code_config") or {}
    host_releases = {h: r.get("release") for h, r in (code.get("hosts") or {}).items()}
    validation = (results.get("validate") or {}).get("hosts")
    return {
        "schema": REPORT_SCHEMA,
        "run_id": run_id or plan.get("run_id"),
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "app": plan.get("app"),
        "reason": plan.get("reason"),
        "from_version": plan.get("from_version"),
        "to_version": plan.get("to_version"),
        "scope": plan.get("scope"),
        "plan_hash": plan.get("hash"),
        "approval": approval,
        "exit_state": state,
        "exit_code": _stages.EXIT_CODES[state],
        "steps": steps,
        "host_releases": host_releases,
        "checks": (results.get("validate") or {}).get("checks"),
        "flags": flags,
        "database": (results.get("database") or {}).get("database"),
        "infrastructure": (results.get("infrastructure") or {}).get("infrastructure"),
        "validation": validation,
        "known_limitations": limitations,
        "next_steps": _next_steps(state, results),
        "release_record": {
            "version": plan.get("from_version"),
            "status": "rolled back" if code.get("status") == _stages.OK else "not rolled back",
            "previous_known_good": plan.get("to_version"),
        },
    }


def _next_steps(state, results):
    if state == _stages.COMPLETED:
        return ["Watch the service's monitoring; open the root-cause analysis for the rolled-back release."]
    if state == _stages.RUN_BLOCKED:
        return ["Resolve the blockers above, then plan and approve again. Nothing was changed."]
    if state == _stages.ABORTED:
        return ["Check the hosts listed above, then `release-rollback resume RUN_DIR` or start a new plan."]
    out = []
    for name in _stages.EXECUTION_STAGES:
        res = results.get(name)
        if res is None or res.get("status") not in (_stages.OK, _stages.SKIPPED):
            out.append("Stage %s: fix the cause above, then `release-rollback resume RUN_DIR`." % name)
            break
    return out or ["Re-run validation with `release-rollback resume RUN_DIR` after mitigation."]


def render_markdown(rep):
    lines = [
        "# Rollback report: %s %s -> %s" % (rep.get("app"), rep.get("from_version"), rep.get("to_version")),
        "",
        "- **Exit state:** %s (exit code %s)" % (rep["exit_state"], rep["exit_code"]),
        "- **Run:** %s" % rep.get("run_id"),
        "- **Reason:** %s" % rep.get("reason"),
        "- **Scope:** %s" % ", ".join(rep.get("scope") or []),
        "- **Plan hash:** `%s`" % rep.get("plan_hash"),
    ]
    appr = rep.get("approval") or {}
    if appr:
        lines.append(
            "- **Approved by:** %s at %s%s"
            % (
                appr.get("approver"),
                appr.get("time"),
                (" (%s)" % appr["reason"]) if appr.get("reason") else "",
            )
        )
    else:
        lines.append("- **Approved by:** nobody")
    rec = rep.get("release_record") or {}
    lines.append(
        "- **Release record:** %s %s; previous known-good release %s"
        % (rec.get("version"), rec.get("status"), rec.get("previous_known_good"))
    )
    lines += ["", "## Steps", "", "| stage | status | started | ended | summary |", "|---|---|---|---|---|"]
    for step in rep["steps"]:
        lines.append(
            "| %s | %s | %s | %s | %s |"
            % (
                step["stage"],
                step["status"],
                step.get("started") or "",
                step.get("ended") or "",
                str(step.get("summary") or "").replace("|", "\\|").replace("\n", " "),
            )
        )
    if rep.get("host_releases"):
        lines += ["", "## Hosts", "", "| host | release |", "|---|---|"]
        for host, release in sorted(rep["host_releases"].items()):
            lines.append("| %s | %s |" % (host, release))
    if rep.get("flags"):
        lines += ["", "## Feature flags", "", "| flag | before | after |", "|---|---|---|"]
        for name, st in sorted(rep["flags"].items()):
            lines.append("| %s | %s | %s |" % (name, _flag_word(st.get("before")), _flag_word(st.get("after"))))
    if rep.get("database"):
        db = rep["database"]
        lines += [
            "",
            "## Database",
            "",
            "- from revision %s to %s (now %s)" % (db.get("from_revision"), db.get("to_revision"), db.get("current")),
        ]
    if rep.get("infrastructure"):
        lines += ["", "## Infrastructure", ""] + _infrastructure_lines(rep["infrastructure"])
    if rep.get("validation"):
        lines += ["", "## Validation", "", "| host | status | detail |", "|---|---|---|"]
        for host, res in sorted(rep["validation"].items()):
            lines.append("| %s | %s | %s |" % (host, res.get("status"), res.get("msg") or ""))
    if rep.get("checks"):
        lines += ["", "## Validation checks", ""] + _checks_lines(rep["checks"])
    lines += ["", "## Known limitations", ""]
    lines += ["- %s" % item for item in rep.get("known_limitations") or []] or ["- none"]
    lines += ["", "## Next steps", ""]
    lines += ["- %s" % item for item in rep.get("next_steps") or []]
    return "\n".join(lines) + "\n"


def _cell(value):
    return str("" if value is None else value).replace("|", "\\|").replace("\n", " ")


def _infrastructure_lines(inf):
    kind = inf.get("kind") or "config_file"
    lines = []
    if kind == "terraform":
        summary = inf.get("plan_summary") or {}
        lines.append(
            "- %s plan of %s: %s to add, %s to change, %s to destroy; %s"
            % (
                "terraform" if not inf.get("version") else "terraform/tofu %s" % inf["version"],
                inf.get("path"),
                summary.get("add", 0),
                summary.get("change", 0),
                summary.get("destroy", 0),
                "applied" if inf.get("restored") else "not applied",
            )
        )
        for res in summary.get("resources") or []:
            lines.append("  - `%s`: %s" % (res.get("address"), ", ".join(res.get("actions") or [])))
    elif kind == "tasks":
        lines.append("- revert tasks %s %s" % (inf.get("path"), "ran" if inf.get("restored") else "did not finish"))
    elif inf.get("restored"):
        lines.append("- %s restored from %s" % (inf.get("path"), inf.get("snapshot")))
    else:
        lines.append("- %s not restored" % inf.get("path"))
    validation = inf.get("validation") or {}
    if validation.get("mode") and validation["mode"] != "none":
        lines.append(
            "- validated %s before it was applied: %s"
            % (validation["mode"].replace("_", " "), "passed" if validation.get("rc") == 0 else "failed")
        )
    verified = inf.get("verified") or {}
    if verified.get("url"):
        lines.append(
            "- verified through %s: HTTP %s after %s attempt(s)"
            % (verified["url"], verified.get("status"), verified.get("attempts"))
        )
    if inf.get("error"):
        lines.append("- error: %s" % inf["error"])
    return lines


def _checks_lines(checks):
    lines = ["| check | kind | value | threshold | result | time |", "|---|---|---|---|---|---|"]
    for check in checks:
        lines.append(
            "| %s | %s | %s | %s | %s | %s |"
            % (
                _cell(check.get("name")),
                _cell(check.get("kind")),
                _cell(check.get("value")),
                _cell(check.get("threshold")),
                "pass" if check.get("ok") else "FAIL: %s" % _cell(check.get("msg")),
                _cell(check.get("time")),
            )
        )
    return lines


def _flag_word(state):
    if not state:
        return "?"
    if state.get("off"):
        return "off"
    return "on (%s, default %s)" % (state.get("state"), state.get("defaultVariant"))


def _write(path, text):
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".report-", dir=directory)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def write(run_dir, rep):
    """Write report.json and report.md into ``run_dir``; returns their paths."""
    os.makedirs(run_dir, exist_ok=True)
    paths = {"json": os.path.join(run_dir, "report.json"), "md": os.path.join(run_dir, "report.md")}
    _write(paths["json"], json.dumps(rep, indent=2, sort_keys=True, default=str) + "\n")
    _write(paths["md"], render_markdown(rep))
    return paths


def record_release(record_file, rep):
    """Append the release's fate to the release record that later plans read (JSON lines)."""
    if not record_file or rep.get("release_record", {}).get("status") != "rolled back":
        return False
    os.makedirs(os.path.dirname(os.path.abspath(record_file)), exist_ok=True)
    entry = {
        "app": rep.get("app"),
        "version": rep.get("from_version"),
        "status": "rolled_back",
        "known_bad": True,
        "rolled_back_to": rep.get("to_version"),
        "run_id": rep.get("run_id"),
        "time": rep.get("generated"),
    }
    with open(record_file, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry, sort_keys=True) + "\n")
    return True
