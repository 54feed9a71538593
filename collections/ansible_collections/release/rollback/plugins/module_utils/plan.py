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

from ansible_collections.release.rollback.plugins.module_utils import dbmigrate as _dbm
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


def _version_key(name):
    parts = re.split(r"(\d+)", str(name).lstrip("v"))
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts if p != ""]


def _older(a, b):
    return _version_key(a) < _version_key(b)


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


def _previous_not_known_bad(facts, known_bad, host, risks):
    """The host's previous release, passing over releases the controller's release record marks known-bad."""
    previous = facts.get("previous")
    if previous not in known_bad:
        return previous
    skipped = set(facts.get("skipped") or [])  # marked on the host (unfinished, rolled back, known-bad)
    names = list(facts.get("releases") or [])  # sorted oldest first
    live = facts.get("live")
    older = names[: names.index(live)] if live in names else []
    candidates = [n for n in older if n not in skipped and n not in known_bad]
    risks.append(
        "host %s: release %s is recorded as rolled back (known-bad) by run %s on the controller; passed over"
        % (host, previous, known_bad[previous])
    )
    return candidates[-1] if candidates else None


def flag_system(flags):
    """Where the release's flags live, in words: ``unleash (project p, environment e) at URL``."""
    if flags["backend"] == "flagd":
        return "flagd file %s" % flags.get("file")
    where = ", ".join("%s %s" % (k, flags[k]) for k in ("project", "environment") if flags.get(k))
    url = flags.get("url") or (flags.get("request") or {}).get("url")
    return flags["backend"] + (" (%s)" % where if where else "") + (" at %s" % url if url else "")


def flag_rows(flags, flag_states=None):
    """One row per flag for the plan: name, backend and the current state when assess could read it."""
    found = (flag_states or {}).get("flags") or {}
    rows = []
    for name in flags["names"]:
        entry = found.get(name) or {}
        before = entry.get("before")
        if before:
            state = "off" if before.get("off") else "on"
        else:
            state = "unknown" + (": %s" % entry["error"] if entry.get("error") else "")
        rows.append({"name": name, "backend": flags["backend"], "state": state})
    return rows


def build_plan(manifest, host_facts, db_status=None, options=None):
    """Build the plan.

    ``manifest``: the output of ``manifest.parse_manifest``; ``host_facts``: host -> result of the
    ``release_facts`` module; ``db_status``: result of ``db_migrate`` in status mode or None;
    ``options``: run_id, inventory, target, scope, created_by, run_dir, known_bad (version -> run id
    from the controller's release record).

    Returns the plan; ``plan["blockers"]`` lists why the rollback cannot go ahead (empty when it can).
    """
    options = options or {}
    blockers = []
    risks = []
    hosts = {}
    lives, targets = set(), set()
    wanted_target = options.get("target") or manifest.get("previous_version")
    known_bad = dict(options.get("known_bad") or {})
    bad = manifest.get("version")
    accept_mixed = bool(options.get("accept_disagreement"))
    records, no_record = {}, []
    for host in sorted(host_facts or {}):
        facts = host_facts[host] or {}
        if facts.get("failed") or facts.get("unreachable"):
            blockers.append("host %s could not be assessed: %s" % (host, facts.get("msg", "unreachable")))
            hosts[host] = {"live": None, "target": None, "error": facts.get("msg", "unreachable")}
            continue
        live = facts.get("live")
        target = _previous_not_known_bad(facts, known_bad, host, risks)
        if facts.get("lock_problem"):
            blockers.append("host %s: %s" % (host, facts["lock_problem"]))
        if wanted_target and wanted_target in known_bad:
            why = (
                "target release %s is recorded as rolled back (known-bad) by run %s: pick another release, or "
                "clear it in the release record if it was fixed" % (wanted_target, known_bad[wanted_target])
            )
            if why not in blockers:
                blockers.append(why)
        elif wanted_target:
            target = wanted_target if wanted_target in (facts.get("releases") or []) else None
            if target is None:
                blockers.append(
                    "target release %s is not on host %s (it has: %s)"
                    % (wanted_target, host, ", ".join(facts.get("releases") or []) or "none")
                )
        elif accept_mixed and bad and live and live != bad and _older(live, bad):
            target = live  # this host never got the bad release: leave it where it is
        elif target is None:
            blockers.append(
                "host %s has no previous release before %s: find the last known-good release in the release "
                "history or tags and pass it with --target, or start from the emergency plan template" % (host, live)
            )
        if bad and live and live != bad and not accept_mixed:
            blockers.append("host %s runs release %s, not the manifest's release %s" % (host, live, bad))
        hosts[host] = {
            "live": live,
            "target": target,
            "layout": facts.get("layout"),
            "link_style": facts.get("link_style"),
            "app_root": facts.get("app_root"),
        }
        if facts.get("skipped"):
            hosts[host]["skipped"] = facts["skipped"]
        if "previous_source" in facts:
            hosts[host]["target_source"] = "--target" if wanted_target else facts["previous_source"]
            if facts.get("record"):
                records[host] = facts["record"]
            else:
                no_record.append(host)
        lives.add(live)
        targets.add(target)
    if not host_facts:
        blockers.append("no application hosts were found: put them in the inventory group 'app'")
    if no_record:
        risks.append(
            "no deployment record of the live release on %s: the previous release was discovered from the "
            "hosts (run the snapshot role at deploy time to record it)" % ", ".join(no_record)
        )
    record = next(iter(records.values()), None) if records else None
    db_section = manifest.get("database") or {}
    recorded_db = (record or {}).get("db_revision_before")
    if recorded_db and db_section.get("target_revision") and recorded_db != db_section["target_revision"]:
        risks.append(
            "the deploy recorded database revision %s before it migrated, but the manifest targets %s"
            % (recorded_db, db_section["target_revision"])
        )
    if record and record.get("flags") and not manifest.get("flags"):
        risks.append(
            "the deploy recorded flags %s, but the manifest has no flags section: they stay as they are"
            % ", ".join(record["flags"])
        )
    lives.discard(None)
    targets.discard(None)
    disagreement = None
    if len(lives) > 1 or len(targets) > 1:
        disagreement = {h: "%s -> %s" % (v["live"], v["target"]) for h, v in hosts.items()}
        spelled = "; ".join("%s: %s" % hv for hv in sorted(disagreement.items()))
        if accept_mixed:
            risks.append(
                "hosts disagree and each host is rolled back to its own target, as approved: %s" % spelled
            )
        else:
            if len(lives) > 1:
                blockers.append(
                    "hosts disagree on the live release (%s): %s; to go ahead host by host, plan again with "
                    "rollback_accept_disagreement: true and approve the plan that spells it out"
                    % (", ".join(sorted(lives, key=_version_key)), spelled)
                )
            if len(targets) > 1:
                blockers.append(
                    "hosts disagree on the previous release (%s): pass --target"
                    % ", ".join(sorted(targets, key=_version_key))
                )
    from_version = manifest.get("version") or (sorted(lives)[0] if len(lives) == 1 else None)
    to_version = sorted(targets)[0] if len(targets) == 1 else wanted_target
    if to_version is None and targets:
        to_version = sorted(targets, key=_version_key)[0]

    try:
        scope = _scope(manifest, options.get("scope"))
    except ValueError as exc:
        blockers.append(str(exc))
        scope = []

    steps = []
    validation_points = []
    if "feature_flags" in scope:
        fl = manifest["flags"]
        flag_states = options.get("flag_states") or {}
        steps.append(
            {
                "stage": "feature_flags",
                "action": "turn off flags %s in %s, then read them back" % (", ".join(fl["names"]), flag_system(fl)),
                "flags": flag_rows(fl, flag_states),
            }
        )
        if flag_states.get("error"):
            risks.append(
                "the flag system could not be read while planning (%s): the feature_flags stage may end "
                "unavailable; the code rollback still goes on" % flag_states["error"]
            )
        validation_points.append("flags %s read back off" % ", ".join(fl["names"]))
    if "code_config" in scope:
        steps.append(
            {
                "stage": "code_config",
                "action": "switch current from %s to %s on %d host(s) atomically, restore configuration, restart, "
                "verify health and version, in batches of %s (stop when more than %s%% of the hosts done fail)"
                % (
                    from_version,
                    to_version,
                    len(hosts),
                    options.get("serial") or "100%",
                    int(options.get("max_fail_percentage") or 0),
                ),
                "hosts": sorted(hosts),
            }
        )
        validation_points.append("version %s and health OK on every application host" % to_version)
    if "database" in scope:
        db = manifest["database"]
        current = (db_status or {}).get("current")
        down = list((db_status or {}).get("steps") or [])
        steps.append(
            {
                "stage": "database",
                "action": "%s downgrade from revision %s to %s%s"
                % (
                    db["tool"],
                    current,
                    db["target_revision"],
                    " in %d step(s): %s; backup first" % (len(down), ", ".join(_dbm.step_label(s) for s in down))
                    if down
                    else "",
                ),
                "from_revision": current,
                "to_revision": db["target_revision"],
                "down_steps": [_dbm.step_label(s) for s in down],
            }
        )
        if db_status and db_status.get("failed"):
            blockers.append("the database revision could not be read: %s" % db_status.get("msg"))
        elif current == db["target_revision"]:
            risks.append("the database is already at revision %s: the database stage will change nothing" % current)
        risks.extend(_db_risks(down))
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
        db_plan["steps"] = list((db_status or {}).get("steps") or [])
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
        "disagreement": disagreement,
        "deploy_record": record,
        # Every host's lock was taken for this run while it was assessed: the code stage needs no lock pass.
        "locked": bool(host_facts) and all((f or {}).get("locked") for f in host_facts.values()),
        "serial": options.get("serial") or "100%",
        # Where the report records the release as rolled back (and where later plans read known-bad ones).
        "release_record": options.get("release_record") or None,
        "max_fail_percentage": int(options.get("max_fail_percentage") or 0),
        "flags": manifest.get("flags"),
        "database": db_plan,
        "infrastructure": manifest.get("infrastructure"),
        "validation": manifest.get("validation"),
        "window": options.get("window") or None,
        "separation_of_duties": bool(options.get("separation_of_duties")),
        "steps": steps,
        "risks": risks,
        "validation_points": validation_points,
        "blockers": blockers,
    }
    plan["hash"] = plan_hash(plan)
    return plan


def _db_risks(down):
    out = []
    for step in down:
        label = _dbm.step_label(step)
        why = "; ".join(step.get("reasons") or [])
        if not step.get("runnable", True):
            out.append(
                "database step %s is irreversible and cannot run (%s): the database stage will refuse it; "
                "restore from a backup or roll the schema forward" % (label, why)
            )
        elif step.get("irreversible"):
            out.append(
                "database step %s is irreversible (%s): it runs only with `approve --destructive`" % (label, why)
            )
        elif step.get("destructive"):
            out.append("database step %s is destructive (%s): it runs only with `approve --destructive`" % (label, why))
    return out


def destructive_steps(plan):
    """The plan's database down steps that need an ``approve --destructive``."""
    return [s for s in ((plan or {}).get("database") or {}).get("steps") or [] if _dbm.needs_approval(s)]


def approval_record(plan, approver, reason=None, when=None, destructive=False, break_glass=None):
    """An approval bound to the plan's content hash.

    With separation of duties the approver must differ from the planner, unless ``break_glass``
    gives the reason for a self-approval (flagged in the record and the report). ``destructive``
    names the database steps the approval covers.
    """
    if not isinstance(approver, str) or not approver.strip() or len(approver) > 200 or "\n" in approver:
        raise ValueError("the approver must be a one-line name, e.g. --approver alice")
    self_approval = approver.strip() == plan.get("created_by")
    if plan.get("separation_of_duties") and self_approval and not break_glass:
        raise ValueError(
            "%s planned this rollback and cannot approve it too (separation of duties): another person "
            "approves, or approve with --break-glass REASON" % approver.strip()
        )
    record = {
        "approver": approver.strip(),
        "time": when or utcnow(),
        "reason": reason or "",
        "plan_hash": plan_hash(plan),
        "destructive": bool(destructive),
        "destructive_steps": [s.get("id") for s in destructive_steps(plan)] if destructive else [],
    }
    if plan.get("separation_of_duties") and self_approval:
        record["break_glass"] = str(break_glass)
    return record


def approved_steps(approval):
    """Ids of the destructive steps an approval covers."""
    if not isinstance(approval, dict) or not approval.get("destructive"):
        return []
    return list(approval.get("destructive_steps") or [])


def database_guard(plan, approval):
    """None when the plan's database down steps may run under ``approval``; else why not."""
    steps = ((plan or {}).get("database") or {}).get("steps") or []
    return _dbm.guard_problem(steps, approved_steps(approval))


def approval_problem(plan, approval):
    """None when ``approval`` approves ``plan``; otherwise one sentence saying why not."""
    if not approval:
        return (
            "the plan is not approved: approve it with `release-rollback approve PLAN --approver NAME` "
            "(or -e rollback_approved_by=NAME with ansible-playbook)"
        )
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
    if (
        plan.get("separation_of_duties")
        and approval.get("approver") == plan.get("created_by")
        and not approval.get("break_glass")
    ):
        return "the planner approved their own plan, which separation of duties forbids: another person approves"
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
    if stage == "database":
        problem = database_guard(plan, approval)
        if problem:
            return {
                "run": False,
                "reason": "the database was not touched: %s" % problem,
                "status": _stages.BLOCKED,
                "reached": True,
            }
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
