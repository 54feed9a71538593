# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Rollback Plan: built from the manifest and what assess found on the hosts, hashed, approved.

Pure Python, standard library only: the assess stage builds the plan through a filter plugin and
the driver checks approvals with the same functions.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timezone

from ansible_collections.release.rollback.plugins.module_utils import stages as _stages

PLAN_SCHEMA = 1
_URL_PASSWORD = re.compile(r"(?P<pre>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]+)(?P<post>@)")


def utcnow():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def redact_url(url):
    """Hide the password of a ``scheme://user:password@host`` URL."""
    if not isinstance(url, str):
        return url
    return _URL_PASSWORD.sub(lambda m: m.group("pre") + "***" + m.group("post"), url)


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def plan_hash(plan):
    """sha256 of the plan's content; the ``hash`` and ``approval`` fields are not part of it."""
    body = {k: v for k, v in plan.items() if k not in ("hash", "approval")}
    return "sha256:" + hashlib.sha256(canonical(body).encode("utf-8")).hexdigest()


def _scope(manifest, requested):
    available = ["feature_flags", "code_config", "database", "infrastructure", "validate"]
    if not manifest.get("flags"):
        available.remove("feature_flags")
    if not manifest.get("database"):
        available.remove("database")
    if not manifest.get("infrastructure"):
        available.remove("infrastructure")
    if not requested:
        return available
    for name in requested:
        if name not in _stages.EXECUTION_STAGES or name == "report":
            raise ValueError(
                "unknown scope %r: choose from feature_flags, code_config, database, infrastructure, validate" % name
            )
    return [n for n in available if n in requested]


def build_plan(manifest, host_facts, db_status=None, options=None):
    """Build the plan.

    ``manifest``: the output of ``manifest.parse_manifest``; ``host_facts``: host -> result of the
    ``release_facts`` module; ``db_status``: result of ``db_migrate`` in status mode or None;
    ``options``: run_id, inventory, target, scope, created_by, run_dir.

    Returns the plan; ``plan["blockers"]`` lists why the rollback cannot go ahead (empty when it can).
    """
    options = options or {}
    blockers = []
    risks = []
    hosts = {}
    lives, targets = set(), set()
    wanted_target = options.get("target") or manifest.get("previous_version")
    for host in sorted(host_facts or {}):
        facts = host_facts[host] or {}
        if facts.get("failed") or facts.get("unreachable"):
            blockers.append("host %s could not be assessed: %s" % (host, facts.get("msg", "unreachable")))
            hosts[host] = {"live": None, "target": None, "error": facts.get("msg", "unreachable")}
            continue
        live = facts.get("live")
        target = facts.get("previous")
        if wanted_target:
            target = wanted_target if wanted_target in (facts.get("releases") or []) else None
            if target is None:
                blockers.append(
                    "target release %s is not on host %s (it has: %s)"
                    % (wanted_target, host, ", ".join(facts.get("releases") or []) or "none")
                )
        elif target is None:
            blockers.append(
                "host %s has no previous release before %s: find the last known-good release in the release "
                "history or tags and pass it with --target, or start from the emergency plan template" % (host, live)
            )
        if manifest.get("version") and live and live != manifest["version"]:
            blockers.append(
                "host %s runs release %s, not the manifest's release %s" % (host, live, manifest["version"])
            )
        hosts[host] = {
            "live": live,
            "target": target,
            "layout": facts.get("layout"),
            "link_style": facts.get("link_style"),
            "app_root": facts.get("app_root"),
        }
        lives.add(live)
        targets.add(target)
    if not host_facts:
        blockers.append("no application hosts were found: put them in the inventory group 'app'")
    lives.discard(None)
    targets.discard(None)
    if len(lives) > 1:
        blockers.append("hosts disagree on the live release (%s): see the per-host table" % ", ".join(sorted(lives)))
    if len(targets) > 1:
        blockers.append("hosts disagree on the previous release (%s): pass --target" % ", ".join(sorted(targets)))
    from_version = manifest.get("version") or (sorted(lives)[0] if len(lives) == 1 else None)
    to_version = sorted(targets)[0] if len(targets) == 1 else wanted_target

    try:
        scope = _scope(manifest, options.get("scope"))
    except ValueError as exc:
        blockers.append(str(exc))
        scope = []

    steps = []
    validation_points = []
    if "feature_flags" in scope:
        fl = manifest["flags"]
        steps.append(
            {
                "stage": "feature_flags",
                "action": "turn off flags %s in %s (%s), then read them back"
                % (", ".join(fl["names"]), fl["file"], fl["backend"]),
            }
        )
        validation_points.append("flags %s read back off" % ", ".join(fl["names"]))
    if "code_config" in scope:
        steps.append(
            {
                "stage": "code_config",
                "action": "switch current from %s to %s on %d host(s) atomically, restore configuration, restart, "
                "verify health and version" % (from_version, to_version, len(hosts)),
                "hosts": sorted(hosts),
            }
        )
        validation_points.append("version %s and health OK on every application host" % to_version)
    if "database" in scope:
        db = manifest["database"]
        current = (db_status or {}).get("current")
        steps.append(
            {
                "stage": "database",
                "action": "%s downgrade from revision %s to %s" % (db["tool"], current, db["target_revision"]),
                "from_revision": current,
                "to_revision": db["target_revision"],
            }
        )
        if db_status and db_status.get("failed"):
            blockers.append("the database revision could not be read: %s" % db_status.get("msg"))
        elif current == db["target_revision"]:
            risks.append("the database is already at revision %s: the database stage will change nothing" % current)
        validation_points.append("database revision == %s" % db["target_revision"])
    if "infrastructure" in scope:
        infra = manifest["infrastructure"]
        steps.append({"stage": "infrastructure", "kind": infra["kind"], "action": _infra_action(infra, to_version)})
        if infra["kind"] == "terraform":
            risks.append(
                "the infrastructure stage applies a Terraform/OpenTofu plan: if it destroys resources it is "
                "refused unless the approval covers destructive steps (`approve --destructive`)"
            )
            validation_points.append("terraform plan of release %s's configuration applied" % to_version)
        elif infra["kind"] == "tasks":
            revert_file = infra["file"].replace("{version}", str(to_version))
            validation_points.append("custom revert tasks %s succeeded" % revert_file)
        else:
            validation_points.append("infrastructure config is release %s's" % to_version)
    if "validate" in scope:
        steps.append({"stage": "validate", "action": _validate_action(manifest.get("validation") or {}, to_version)})
    steps.append({"stage": "report", "action": "write the report, mark %s rolled back" % from_version})
    if not manifest.get("version"):
        risks.append("no release manifest version: the bad release was discovered from the hosts")
    if "database" not in scope and manifest.get("database") is None:
        risks.append("no database section in the manifest: migrations are not rolled back")

    db_plan = None
    if manifest.get("database"):
        db_plan = dict(manifest["database"], url=redact_url(manifest["database"]["url"]))
        db_plan["current_revision"] = (db_status or {}).get("current")
    plan = {
        "schema": PLAN_SCHEMA,
        "run_id": options.get("run_id"),
        "created": options.get("created") or utcnow(),
        "created_by": options.get("created_by") or "unknown",
        "app": manifest.get("app"),
        "reason": manifest.get("reason"),
        "inventory": options.get("inventory"),
        "manifest_file": options.get("manifest_file"),
        "from_version": from_version,
        "to_version": to_version,
        "approach": "roll forward to the previous known-good release by switching the release link back "
        "(same mechanism as the deploy), in the order of the rollback procedure",
        "scope": scope,
        "hosts": hosts,
        "flags": manifest.get("flags"),
        "database": db_plan,
        "infrastructure": manifest.get("infrastructure"),
        "validation": manifest.get("validation"),
        "steps": steps,
        "risks": risks,
        "validation_points": validation_points,
        "blockers": blockers,
    }
    plan["hash"] = plan_hash(plan)
    return plan


def approval_record(plan, approver, reason=None, when=None, destructive=False):
    """An approval bound to the plan's content hash."""
    if not isinstance(approver, str) or not approver.strip() or len(approver) > 200 or "\n" in approver:
        raise ValueError("the approver must be a one-line name, e.g. --approver alice")
    return {
        "approver": approver.strip(),
        "time": when or utcnow(),
        "reason": reason or "",
        "plan_hash": plan_hash(plan),
        "destructive": bool(destructive),
    }


def approval_problem(plan, approval):
    """None when ``approval`` approves ``plan``; otherwise one sentence saying why not."""
    if not approval:
        return "the plan is not approved: run `release-rollback approve PLAN --approver NAME`"
    if not isinstance(approval, dict) or not approval.get("approver"):
        return "the approval record is malformed: approve the plan again"
    if plan.get("hash") and plan.get("hash") != plan_hash(plan):
        return "the plan was edited after it was built (its hash no longer matches): build a new plan"
    if approval.get("plan_hash") != plan_hash(plan):
        return (
            "the approval by %s is for a different plan (the plan changed since it was approved): "
            "approve the current plan again" % approval.get("approver")
        )
    if plan.get("blockers"):
        return "the plan has blockers and cannot be approved: %s" % plan["blockers"][0]
    return None


def stage_gate(stage, results, plan=None, approval=None):
    """Whether ``stage`` runs: the stage table's rules, the plan's scope and the approval.

    Returns ``{"run": bool, "reason": str, "status": status to publish when it does not run,
    "reached": bool}``. Used by the playbooks (through a filter) and by the driver alike.
    """
    if stage == "assess":
        return {"run": True, "reason": "assess always runs", "status": None, "reached": True}
    verdict = _stages.gate(stage, results)
    if not verdict["run"]:
        return {"run": False, "reason": verdict["reason"], "status": _stages.SKIPPED, "reached": False}
    if stage == "report":
        return {"run": True, "reason": verdict["reason"], "status": None, "reached": True}
    if stage not in (plan or {}).get("scope", []):
        return {"run": False, "reason": "not in the plan's scope", "status": _stages.SKIPPED, "reached": True}
    problem = approval_problem(plan or {}, approval)
    if problem:
        return {"run": False, "reason": problem, "status": _stages.BLOCKED, "reached": True}
    return {
        "run": True,
        "reason": "approved by %s" % approval.get("approver"),
        "status": None,
        "reached": True,
    }


def gated_result(stage, gate, started=None, ended=None):
    """The result a stage publishes when its gate kept it from running."""
    return {
        "stage": stage,
        "status": gate.get("status") or _stages.SKIPPED,
        "changed": False,
        "summary": gate.get("reason"),
        "hosts": {},
        "reached": gate.get("reached", False),
        "started": started,
        "ended": ended,
    }


def _infra_action(infra, to_version):
    if infra["kind"] == "terraform":
        return "%s plan of %s, plan summary recorded, apply (destroys need a destructive approval)" % (
            infra["binary"],
            infra["project_path"].replace("{version}", str(to_version)),
        )
    if infra["kind"] == "tasks":
        return "run the revert tasks %s with the plan's context" % infra["file"].replace("{version}", str(to_version))
    return "restore %s from %s, validate it before applying, reload%s" % (
        infra["path"],
        infra["snapshot"].replace("{version}", str(to_version)),
        ", verify %s" % infra["verify_url"] if infra.get("verify_url") else "",
    )


def _validate_action(validation, to_version):
    parts = ["HTTP health and version == %s on every host" % to_version]
    if validation.get("smoke"):
        parts.append("%d smoke check(s)" % len(validation["smoke"]))
    if validation.get("prometheus"):
        parts.append("%d Prometheus quer(ies) within thresholds" % len(validation["prometheus"]["queries"]))
    if validation.get("alertmanager"):
        parts.append("no active unsilenced alerts matching %s" % ", ".join(validation["alertmanager"]["matchers"]))
    return "; ".join(parts)
