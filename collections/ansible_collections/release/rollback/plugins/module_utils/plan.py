# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Rollback Plan: built from the manifest and what assess found on the hosts, hashed, approved.

Pure Python, standard library only: the assess stage builds the plan through a filter plugin and
the driver checks approvals with the same functions.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone

from ansible_collections.release.rollback.plugins.module_utils import dbmigrate as _dbm
from ansible_collections.release.rollback.plugins.module_utils import lifecycle as _lifecycle
from ansible_collections.release.rollback.plugins.module_utils import manual as _manual
from ansible_collections.release.rollback.plugins.module_utils import service as _service
from ansible_collections.release.rollback.plugins.module_utils import stages as _stages
from ansible_collections.release.rollback.plugins.module_utils.digest import state_digest

PLAN_SCHEMA = 1
_URL_PASSWORD = re.compile(r"(?P<pre>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]+)(?P<post>@)")


def utcnow():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def redact_url(url):
    """Hide the password of a ``scheme://user:password@host`` URL."""
    if not isinstance(url, str):
        return url
    return _URL_PASSWORD.sub(lambda m: m.group("pre") + "***" + m.group("post"), url)


def plan_hash(plan):
    """sha256 of the plan's content; the ``hash`` and ``approval`` fields are not part of it."""
    body = {k: v for k, v in plan.items() if k not in ("hash", "approval")}
    return state_digest(body)


def _version_key(name):
    parts = re.split(r"(\d+)", str(name).lstrip("v"))
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts if p != ""]


# The stages that act on the whole release rather than a host's code, with the manifest section each needs.
_RELEASE_WIDE = (("feature_flags", "flags"), ("database", "database"), ("infrastructure", "infrastructure"))


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
    """One row per flag for the plan: name, backend, the current state when assess could read it, and
    the digest of that state, which the flags stage compares before it changes the flag."""
    found = (flag_states or {}).get("flags") or {}
    rows = []
    for name in flags["names"]:
        entry = found.get(name) or {}
        before = entry.get("before")
        if before:
            state = "off" if before.get("off") else "on"
        else:
            state = "unknown" + (": %s" % entry["error"] if entry.get("error") else "")
        digest = state_digest(before) if before else None
        rows.append({"name": name, "backend": flags["backend"], "state": state, "from": digest})
    return rows


def flag_expectations(plan):
    """``{flag: digest of its state when planned}`` for the flags stage's compare-and-swap (None: unknown)."""
    for step in (plan or {}).get("steps") or []:
        if step.get("stage") == "feature_flags":
            return {row["name"]: row.get("from") for row in step.get("flags") or []}
    return {}


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
    # A plan whose scope leaves the code out changes no host's release: a host off the bad release stays where
    # it is, as under an accepted disagreement (the database or infrastructure of a release whose code is gone
    # already can still be rolled back).
    code_untouched = bool(options.get("scope")) and "code_config" not in options["scope"]
    stay = accept_mixed or code_untouched
    records, no_record = {}, []
    passed_over = []
    off_bad_hosts = []  # assessed hosts that run another release than the manifest's
    off_bad_at = []  # where their blockers are
    blockers.extend(options.get("inventory_problems") or [])
    settings = options.get("host_settings") or {}
    no_restart, no_http = [], []
    # The run of this controller that holds each locked host, read once. Those that have not ended are rolling
    # this application back already, and the hosts they moved are why some hosts run another release.
    holders = {
        h: _holder_run((f or {}).get("lock"), options)
        for h, f in (host_facts or {}).items()
        if (f or {}).get("lock_problem")
    }
    unfinished = _unfinished_holders(holders)
    for host in sorted(host_facts or {}):
        facts = host_facts[host] or {}
        if facts.get("failed") or facts.get("unreachable"):
            why = facts.get("msg") or "unreachable"
            blockers.append(
                "host %s could not be assessed: %s; fix it, or plan again without it (`--exclude %s`), which "
                "records it as a risk" % (host, why, host)
            )
            hosts[host] = {"live": None, "target": None, "error": why}
            continue
        live = facts.get("live")
        off_bad = bool(bad and live and live != bad and not stay)
        target = _previous_not_known_bad(facts, known_bad, host, risks)
        if facts.get("lock_problem"):
            blockers.append("host %s: %s%s" % (host, facts["lock_problem"], _holder_hint(holders.get(host))))
        service = _service_preflight(host, settings.get(host), blockers, no_restart, no_http)
        if wanted_target and wanted_target == bad:
            why = (
                "target release %s is the release the manifest names as bad: pass the last known-good release with "
                "--target, or leave --target out to roll back to each host's previous release" % wanted_target
            )
            if why not in blockers:
                blockers.append(why)
        elif wanted_target and wanted_target in known_bad:
            why = (
                "target release %s is recorded as rolled back (known-bad) by run %s: pick another release, or "
                "clear it in the release record if it was fixed" % (wanted_target, known_bad[wanted_target])
            )
            if why not in blockers:
                blockers.append(why)
        elif wanted_target:
            target = wanted_target if wanted_target in (facts.get("releases") or []) else None
            refused = (facts.get("passed_over") or {}).get(wanted_target)
            if refused:
                blockers.append(
                    "target release %s on host %s is refused: releases/%s is %s"
                    % (wanted_target, host, wanted_target, refused)
                )
            elif target is None:
                blockers.append(
                    "target release %s is not on host %s (it has: %s)"
                    % (wanted_target, host, ", ".join(facts.get("releases") or []) or "none")
                )
        elif stay and bad and live and live != bad:
            # Not on the bad release: it never got it, or a fix went out to it since. It stays where it is; going
            # back from a newer release could land on the bad one.
            target = live
        elif target is None and not off_bad:
            blockers.append(
                "host %s has no previous release before %s: find the last known-good release in the release "
                "history or tags and pass it with --target, or start from the emergency plan template" % (host, live)
            )
        if off_bad:
            off_bad_hosts.append(host)
            # Not on the bad release: going back from what it runs would take a release back that the manifest
            # does not name as bad, so no --target advice here.
            off_bad_at.append(len(blockers))
            blockers.append(
                "host %s runs release %s, not the manifest's release %s: it is not on the bad release"
                % (host, live, bad)
            )
        hosts[host] = {
            "live": live,
            "target": target,
            "layout": facts.get("layout"),
            "link_style": facts.get("link_style"),
            "app_root": facts.get("app_root"),
        }
        if service:
            hosts[host]["service"] = service
        if facts.get("mechanism") and facts["mechanism"] != "release_dirs":
            _with_mechanism(hosts[host], facts, host, target, blockers)
        if facts.get("skipped"):
            hosts[host]["skipped"] = facts["skipped"]
        if facts.get("passed_over"):
            # Entries of releases/ that are not releases (links, hostile names): never a target.
            hosts[host]["passed_over"] = dict(facts["passed_over"])
            passed_over.append(
                "%s: %s" % (host, "; ".join("releases/%s is %s" % kv for kv in sorted(facts["passed_over"].items())))
            )
        if "previous_source" in facts:
            hosts[host]["target_source"] = "--target" if wanted_target else facts["previous_source"]
            if facts.get("record"):
                records[host] = facts["record"]
            else:
                no_record.append(host)
        lives.add(live)
        targets.add(target)
    if off_bad_hosts and len(off_bad_hosts) < len(hosts) and not unfinished:
        # Only some hosts got the bad release: leaving the others where they are is the way on. (Not when none
        # did, nor when another run is moving them.)
        for at in off_bad_at:
            blockers[at] += (
                " (if only some hosts got it, set rollback_accept_disagreement to leave the others where they are)"
            )
    if off_bad_hosts and len(off_bad_hosts) == len(hosts) and not unfinished:
        now = ", ".join(sorted({hosts[h]["live"] for h in off_bad_hosts}))
        # The release's other changes (flags, schema, infrastructure) may still be in place when its code is gone
        # (a run overtaken by a fix on some hosts): a plan that leaves the code out rolls them back.
        rest = [(stage, word) for stage, word in _RELEASE_WIDE if manifest.get(word)]
        blockers.insert(
            0,
            "no host runs the manifest's release %s (they run %s): there is no code to roll back; if the release "
            "they run now is bad, plan with its manifest%s"
            % (
                bad,
                now,
                "; if the %s changes of %s are still in place, plan them alone: %s"
                % (
                    ", ".join(word for _stage, word in rest),
                    bad,
                    " ".join("--scope %s" % stage for stage, _word in rest + [("validate", "")]),
                )
                if rest
                else "",
            ),
        )
    for run_dir in sorted(unfinished, reverse=True):
        blockers.insert(0, _unfinished_blocker(run_dir, *unfinished[run_dir]))
    if not host_facts and not options.get("inventory_problems"):
        blockers.append("no application hosts were found: put them in the inventory group 'app'")
    if no_restart:
        risks.append(
            "no restart is configured on %s: the application is not restarted after the switch (as "
            "ansistrano's own rollback does); set rollback_restart_command or rollback_service_name to restart it"
            % ", ".join(no_restart)
        )
    if no_http:
        risks.append(
            "no health or version URL is configured on %s: the switch is verified by current/REVISION only; set "
            "rollback_health_url and rollback_version_url to verify the running application" % ", ".join(no_http)
        )
    if passed_over:
        risks.append(
            "entries of releases/ that are not releases were passed over and are never a target (check who put "
            "them there): %s" % " | ".join(passed_over)
        )
    excluded = dict(options.get("excluded") or {})
    if excluded:
        risks.append(
            "left out of this rollback, and not validated: %s; they stay on the release they run"
            % "; ".join("%s (%s)" % hv for hv in sorted(excluded.items()))
        )
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
        if code_untouched:
            risks.append(
                "hosts run different releases and the code is not in this plan's scope: each host stays on the release "
                "it runs, and validation checks it there: %s" % spelled
            )
        elif accept_mixed:
            risks.append("hosts disagree and each host is rolled back to its own target, as approved: %s" % spelled)
        else:
            if len(lives) > 1:
                blockers.append(
                    "hosts disagree on the live release (%s): %s%s"
                    % (
                        ", ".join(sorted(lives, key=_version_key)),
                        spelled,
                        ""
                        if unfinished
                        else "; to go ahead host by host, plan again with rollback_accept_disagreement: true and "
                        "approve the plan that spells it out",
                    )
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
        if flag_states.get("blocker"):
            blockers.append(flag_states["error"])
        elif flag_states.get("error"):
            risks.append(
                "the flag system could not be read while planning (%s): the flags whose state is unknown are "
                "turned off whatever state they are in when the flag system answers (approving this plan approves "
                "that); the code rollback still goes on" % flag_states["error"]
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
            # The CLI says "Nothing was changed" once for the whole plan: not again for this line.
            why = re.sub(r"[;.]\s*nothing was changed\.?$", "", str(db_status.get("msg")), flags=re.I)
            blockers.append("the database could not be assessed: %s" % why)
        elif current == db["target_revision"]:
            risks.append("the database is already at revision %s: the database stage will change nothing" % current)
        risks.extend(_db_risks(down))
        blockers.extend(_db_blockers(down, scope))
        needs = [_dbm.step_label(s) for s in down if _dbm.needs_approval(s) and s.get("runnable", True)]
        if needs:
            steps[-1]["approval"] = "needs `approve --destructive` for %s" % ", ".join(needs)
        risks.extend(_db_target_risks(db, current, scope, hosts, host_facts, record, wanted_target, from_version))
        newer = sorted(
            h for h, v in hosts.items() if bad and v.get("live") and _version_key(v["live"]) > _version_key(bad)
        )
        if newer and down:
            risks.append(
                "the database goes back to revision %s while hosts run a release newer than the bad %s (%s): check "
                "that it works with the older schema" % (db["target_revision"], bad, ", ".join(newer))
            )
        if excluded and down:
            risks.append(
                "the database goes back to revision %s while the hosts left out of this rollback (%s) keep the release "
                "they run: check that it works with the older schema, or plan without leaving them out"
                % (db["target_revision"], ", ".join(sorted(excluded)))
            )
        validation_points.append("database revision == %s" % db["target_revision"])
    infra_state = options.get("infra_state") or {}
    if "infrastructure" in scope:
        infra = manifest["infrastructure"]
        steps.append({"stage": "infrastructure", "kind": infra["kind"], "action": _infra_action(infra, to_version)})
        if infra_state.get("error"):
            blockers.append("the infrastructure cannot be rolled back: %s" % infra_state["error"])
        if infra["kind"] == "tasks":
            risks.append(
                "the custom revert tasks change what they change without a compare-and-swap: the tool cannot read "
                'their "from" state, so nothing stops them if the infrastructure changed after this plan'
            )
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
    manual_steps = list(manifest.get("manual_steps") or [])
    runbook = manifest.get("runbook") or None
    emergency = bool(options.get("emergency")) and not runbook
    steps = _with_sources_and_manual(steps, manual_steps, manifest, runbook, emergency)
    steps.append({"stage": "report", "action": "write the report, mark %s rolled back" % from_version})
    if emergency:
        risks.extend(_emergency_risks(scope, options.get("last_rollback")))
    if not manifest.get("version"):
        risks.append("no release manifest version: the bad release was discovered from the hosts")
    if "database" not in scope and manifest.get("database") is None:
        risks.append("no database section in the manifest: migrations are not rolled back")

    db_plan = None
    if manifest.get("database"):
        db_plan = dict(manifest["database"], url=redact_url(manifest["database"]["url"]))
        db_plan["current_revision"] = (db_status or {}).get("current")
        db_plan["steps"] = list((db_status or {}).get("steps") or [])
        # The database the plan was made for, by identity (not URL text): the approval binds it.
        db_plan["identity"] = (db_status or {}).get("identity") or None
    plan = {
        "schema": PLAN_SCHEMA,
        "run_id": options.get("run_id"),
        "created": options.get("created") or utcnow(),
        "created_by": options.get("created_by") or "unknown",
        "app": manifest.get("app"),
        "environment": manifest.get("environment"),
        "reason": manifest.get("reason"),
        "inventory": options.get("inventory"),
        "manifest_file": options.get("manifest_file"),
        "from_version": from_version,
        "to_version": to_version,
        "approach": "roll forward to the previous known-good release by switching the release link back "
        "(same mechanism as the deploy), in the order of the rollback procedure",
        # Each layer's approach (automated, manual, hybrid), the manual steps in order, and where the plan
        # came from: "emergency plan" when there was neither a manifest nor a runbook.
        "layers": _manual.approach(scope, manual_steps),
        "manual_steps": manual_steps,
        "label": "emergency plan" if emergency else ("runbook plan" if runbook else "plan"),
        "runbook": runbook,
        "document_for_future": (
            "document for future: write this application's runbook (docs/runbooks.md) so that the next rollback "
            "has a plan, not an emergency plan"
        )
        if emergency
        else None,
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
        "infrastructure": dict(manifest["infrastructure"], from_checksum=infra_state.get("checksum"))
        if manifest.get("infrastructure")
        else None,
        "validation": manifest.get("validation"),
        # Hosts left out with --limit/--exclude (or an ansible-playbook --limit), and why.
        "excluded": excluded,
        # What the approval binds besides the plan itself: the manifest and the inventory facts the plan
        # was made from. A change to either voids the approval (``binding_problem``).
        "inventory_facts": options.get("inventory_facts"),
        "bindings": {
            "manifest": options.get("manifest_digest") or manifest_digest(manifest),
            "inventory": inventory_digest(options.get("inventory_facts")),
        },
        "window": options.get("window") or None,
        "separation_of_duties": bool(options.get("separation_of_duties")),
        "steps": steps,
        "risks": risks,
        "validation_points": validation_points,
        "blockers": blockers,
    }
    plan["hash"] = plan_hash(plan)
    return plan


def _with_sources_and_manual(steps, manual_steps, manifest, runbook, emergency):
    """The automated steps with where each comes from (manifest, runbook, discovery), and the manual steps
    in their place: per stage, the ones before it, its automated step, the ones after it."""
    from_runbook = set((runbook or {}).get("layers") or [])
    by_stage = {}
    for step in steps:
        stage = step["stage"]
        if stage in from_runbook:
            step["source"] = "runbook"
        elif emergency or (runbook and not runbook.get("with_manifest")):
            step["source"] = "discovery"
        else:
            step["source"] = "manifest"
        by_stage[stage] = step
    out = []
    for kind, item in _manual.sequence(manual_steps):
        if kind == "stage":
            if item in by_stage:
                out.append(by_stage[item])
            continue
        out.append(
            {
                "stage": item["stage"],
                "kind": "manual",
                "manual": item["id"],
                "position": item["position"],
                "owner": item["owner"],
                "blocking": item["blocking"],
                "source": item["source"],
                "action": "MANUAL (%s, %s): %s"
                % (item["owner"], "blocking" if item["blocking"] else "not blocking", item["title"]),
                "instructions": item["instructions"],
            }
        )
    return out


_LAYER_WHAT = {
    "feature_flags": "feature flags",
    "database": "database migrations",
    "infrastructure": "infrastructure",
}


def _emergency_risks(scope, last):
    """An emergency plan's risks: every layer it did not discover, and what the last rollback of the same
    application did that this plan does not."""
    out = []
    last = last or {}
    for layer, what in sorted(_LAYER_WHAT.items()):
        if layer in scope:
            continue
        also = ""
        if layer in (last.get("scope") or []):
            also = "; the last rollback of this application (run %s) rolled back its %s too" % (
                last.get("run_id"),
                what,
            )
        out.append(
            "emergency plan: the %s layer was not discovered (no manifest, no runbook), so its %s are not rolled "
            "back%s: check it by hand" % (layer, what, also)
        )
    for step in last.get("manual_steps") or []:
        out.append(
            "emergency plan: the last rollback of this application (run %s) had the manual step %r (%s %s): "
            "do it by hand if it applies"
            % (last.get("run_id"), step.get("title"), step.get("position"), step.get("stage"))
        )
    return out


def manifest_digest(parsed):
    """sha256 of a checked manifest (``manifest.parse_manifest``), secrets included: what an approval binds."""
    return state_digest(parsed or {})


def inventory_facts(hosts, get, db_host=None, flags_host=None, db_url=None):
    """The inventory facts a plan is made from, which its approval binds.

    ``hosts``: the application hosts the plan covers; ``get(host, name)``: an inventory variable of a
    host (None when unset); ``db_host``: the host that runs the migrations (when there is a database
    section); ``db_url``: the database URL when the inventory gives it (``rollback_db_url``), bound by
    its digest only. Secrets never enter the plan.
    """
    facts = {
        "hosts": {
            h: {"app_root": get(h, "rollback_app_root"), "layout": get(h, "rollback_layout") or "auto"}
            for h in sorted(hosts)
        },
        "db_host": db_host,
        "flags_host": flags_host or "localhost",
    }
    for h, entry in facts["hosts"].items():
        mechanism = get(h, "rollback_code_mechanism")
        if mechanism and mechanism != "release_dirs":
            # Bound only when set, so that plans of release directories keep the facts they had.
            entry.update(code_mechanism=mechanism, container=get(h, "rollback_container"))
    if db_url:
        facts["db_url"] = state_digest(db_url)[:23]
    return facts


def inventory_digest(facts):
    return state_digest(facts) if facts is not None else None


def binding_problem(plan, manifest_now=None, facts_now=None):
    """None while the approval still binds what it was given for; otherwise one sentence saying what
    changed since the plan was made. ``manifest_now`` is the digest of the manifest as it reads now,
    ``facts_now`` the inventory facts as they read now (``inventory_facts``); None skips that check."""
    bound = (plan or {}).get("bindings") or {}
    if manifest_now is not None and bound.get("manifest") and manifest_now != bound["manifest"]:
        return (
            "the release manifest changed after the plan was made, so its approval is void and nothing was "
            "changed: build a new plan from the manifest as it is now (release-rollback plan)"
        )
    if facts_now is not None and bound.get("inventory") and inventory_digest(facts_now) != bound["inventory"]:
        return (
            "the inventory changed after the plan was made (%s), so its approval is void and nothing was changed: "
            "build a new plan (release-rollback plan)" % _fact_changes(plan.get("inventory_facts") or {}, facts_now)
        )
    return None


def _fact_changes(before, after):
    changes = []
    hb, ha = before.get("hosts") or {}, after.get("hosts") or {}
    for host in sorted(set(hb) | set(ha)):
        if host not in ha:
            changes.append("%s is no longer in the inventory" % host)
        elif host not in hb:
            changes.append("%s is new" % host)
        else:
            for key in sorted(set(hb[host]) | set(ha[host])):
                if hb[host].get(key) != ha[host].get(key):
                    changes.append("%s's rollback_%s was %s, is %s" % (host, key, hb[host].get(key), ha[host].get(key)))
    for key in ("db_host", "flags_host", "db_url"):
        if before.get(key) != after.get(key):
            if key == "db_url":
                changes.append("db_url changed")
            else:
                changes.append("%s was %s, is %s" % (key, before.get(key), after.get(key)))
    return "; ".join(changes[:5]) or "its facts differ"


def _holder_run(lock, options):
    """``(run directory, lifecycle state)`` of the run of this controller that holds a host's lock, or None."""
    run_id = (lock or {}).get("run_id")
    root = options.get("runs_root")
    if not run_id or not root or "/" in str(run_id) or run_id == options.get("run_id"):
        return None
    run_dir = "%s/%s" % (str(root).rstrip("/"), run_id)
    try:
        with open(run_dir + "/state.json", encoding="utf-8") as fh:
            return run_dir, (json.load(fh).get("lifecycle") or {}).get("state")
    except (OSError, ValueError, AttributeError):
        return None


def _unfinished_holders(holders):
    """``{run directory: (state, [hosts])}`` of ``holders`` (host -> ``_holder_run``): the runs that hold a
    host's lock and have not ended."""
    found = {}
    for host in sorted(holders):
        holder = holders[host]
        if holder and holder[1] not in _lifecycle.FINAL:
            found.setdefault(holder[0], (holder[1], []))[1].append(host)
    return found


def _holder_commands(state, run_dir):
    """The commands that move a holder's run on: resume and abort for a paused or partial run, else none."""
    return _lifecycle.next_commands(state, run_dir) if state in (_lifecycle.PAUSED, _lifecycle.PARTIAL) else []


def _unfinished_blocker(run_dir, state, hosts):
    """The first blocker when another run of this application has not ended: finish or end that run."""
    commands = _holder_commands(state, run_dir)
    if commands:
        what = "finish that rollback with `%s`, or end it with `%s`" % (commands[0], commands[-1])
    else:
        what = "see `release-rollback status %s`" % run_dir
    return (
        "run %s is %s and still holds %s: it is rolling this application back already; %s, instead of "
        "starting another rollback" % (run_dir.rsplit("/", 1)[-1], state, ", ".join(hosts), what)
    )


def _holder_hint(holder):
    """How to move on the run that holds a host's lock (``_holder_run``), when it is a run of this controller."""
    if holder is None:
        return ""
    run_dir, state = holder
    if state in _lifecycle.FINAL:
        # A final run is never aborted again: --break-lock replaces a final run's host locks at once (audited).
        return (
            "; that run is %s, so its lock is left over: plan again with --break-lock, which takes it back "
            "(audited)" % state
        )
    commands = _holder_commands(state, run_dir)
    gone = "; or, if its driver is gone, plan again with --break-lock (audited)"
    if not commands:
        return "; that run is %s: see `release-rollback status %s`%s" % (state, run_dir, gone)
    # A paused run's driver has ended: breaking its locks would start a second rollback beside it.
    return "; that run is %s: finish it with `%s`, or end it with `%s`" % (state, commands[0], commands[-1])


def _with_mechanism(entry, facts, host, target, blockers):
    """A host whose code is not release directories: what its mechanism adds to the plan's entry.

    A container's entry names the image digests: the "from" of the compare-and-swap and the target
    the container is recreated from, so that a tag moved after approval never changes what runs. A
    target image that is not on the host blocks the plan with how to bring it back.
    """
    entry["mechanism"] = facts["mechanism"]
    for key in ("container", "image"):
        if facts.get(key):
            entry[key] = facts[key]
    entry["live_digest"] = facts.get("live_digest")
    entry["target_digest"] = (facts.get("digests") or {}).get(target) if target else None
    missing = (facts.get("missing") or {}).get(target) if target else None
    if missing:
        blockers.append("host %s: %s" % (host, missing))


def _service_preflight(host, settings, blockers, no_restart, no_http):
    """The service manager a host will be restarted with, checked before anyone approves the plan."""
    if settings is None:
        return None
    if settings.get("code_mechanism") in ("containers", "compose"):
        # Containers are recreated, not restarted. Validate reads a container's release back only
        # through the version URL (there is no release link to read), so without one the plan blocks.
        if not settings.get("version_url"):
            blockers.append(
                "host %s runs containers and has no rollback_version_url: the rollback could not read back which "
                "release it runs; set rollback_version_url (and rollback_health_url) in the inventory" % host
            )
        return "container"
    manager = _service.effective_manager(settings)
    problem = _service.argument_problem(dict(settings, restart=True))
    if problem:
        blockers.append(
            "host %s cannot be restarted: %s (set them in the inventory, or rollback_service_manager: none)"
            % (host, problem)
        )
    if manager == "none":
        no_restart.append(host)
    if not settings.get("health_url") and not settings.get("version_url"):
        no_http.append(host)
    return manager


def hosts_owed(plan, prior=None, retry=None):
    """The plan's application hosts the code stage still owes: every host without an ``ok`` result in
    ``prior`` (the stage's earlier result). ``retry`` (a list of host names, from ``resume --limit``)
    narrows the hosts that were tried and failed; hosts never attempted (pending, unknown) are always
    owed, so a resume finishes what the plan still owes."""
    planned = sorted((plan or {}).get("hosts") or {})
    done = ((prior or {}).get("hosts") or {}) if prior else {}
    owed = []
    for host in planned:
        status = (done.get(host) or {}).get("status")
        if status == _stages.OK:
            continue
        tried = status in (_stages.FAILED, _stages.BLOCKED, _stages.STALE, _stages.UNAVAILABLE)
        if retry is not None and tried and host not in retry:
            continue
        owed.append(host)
    return owed


def with_infra_state(plan, state):
    """The plan with what the infrastructure host showed while planning: the live config's digest (the
    infrastructure stage's compare-and-swap "from") and whether the file to restore is there."""
    infra = (plan or {}).get("infrastructure")
    if not infra or "infrastructure" not in (plan.get("scope") or []) or not state:
        return plan
    plan = dict(plan, infrastructure=dict(infra), blockers=list(plan.get("blockers") or []))
    if infra.get("kind") == "config_file":
        live, snapshot = state.get("live") or {}, state.get("snapshot") or {}
        plan["infrastructure"]["from_checksum"] = ("sha256:" + live["checksum"]) if live.get("checksum") else None
        if state.get("unreachable") or state.get("failed"):
            plan["blockers"].append(
                "the infrastructure host could not be read: %s" % (state.get("msg") or "unreachable")
            )
        elif not snapshot.get("exists") and plan.get("to_version"):
            plan["blockers"].append(
                "the config to restore, %s, does not exist on the infrastructure host: check infrastructure.snapshot"
                % state.get("snapshot_path")
            )
        elif live.get("exists") and not live.get("isreg"):
            plan["blockers"].append(
                "%s is not a regular file on the infrastructure host: check infrastructure.path" % infra.get("path")
            )
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
        elif step.get("unclassified"):
            out.append(
                "database step %s is unclassified: it cannot be proven safe (%s): it runs only with "
                "`approve --destructive`" % (label, why)
            )
        elif step.get("destructive"):
            out.append("database step %s is destructive (%s): it runs only with `approve --destructive`" % (label, why))
    return out


def _db_blockers(down, scope):
    """A down step that cannot run at all would be refused whatever the approval: the plan says so now."""
    out = []
    for step in down:
        if step.get("runnable", True):
            continue
        others = [n for n in scope if n != "database"]
        out.append(
            "database step %s cannot run (%s): no approval lets it run. With a DBA, restore the database from a "
            "backup taken before the release or roll the schema forward with a new migration%s"
            % (
                _dbm.step_label(step),
                "; ".join(step.get("reasons") or ["irreversible"]),
                "; to roll back the rest now, plan again with %s" % " ".join("--scope %s" % n for n in others)
                if others
                else "",
            )
        )
    return out


def _db_target_risks(db, current, scope, hosts, host_facts, record, wanted_target, from_version):
    """Where the database's target and the code's target disagree."""
    out = []
    target = db.get("target_revision")
    if "code_config" not in scope:
        out.append(
            "only the database is rolled back (code_config is not in scope): the code stays on release %s, "
            "whose schema the database leaves (revision %s -> %s): check that release runs on revision %s"
            % (from_version, current, target, target)
        )
    if wanted_target and "code_config" in scope:
        previous = {(host_facts.get(h) or {}).get("previous") for h in hosts}
        previous.discard(None)
        if previous and wanted_target not in previous:
            recorded = (record or {}).get("db_revision_before")
            out.append(
                "--target %s is more than one release back (the previous release is %s), but the database goes "
                "to revision %s, the manifest's%s: the code would run on another release's schema; set "
                "database.target_revision to release %s's revision"
                % (
                    wanted_target,
                    ", ".join(sorted(previous)),
                    target,
                    " (the deploy of the live release recorded %s before it migrated: the previous release's)"
                    % recorded
                    if recorded
                    else "",
                    wanted_target,
                )
            )
    return out


def destructive_steps(plan):
    """The plan's database down steps that need an ``approve --destructive``."""
    return [s for s in ((plan or {}).get("database") or {}).get("steps") or [] if _dbm.needs_approval(s)]


def destructive_changes(plan):
    """What in the plan needs an approval of destructive steps, one entry per change.

    A database down step that would lose data, cannot restore the schema or cannot be analysed (it
    runs only when the approval covers it), and a Terraform/OpenTofu infrastructure stage (its
    apply is refused if it destroys a resource, unless the approval covers destructive steps: what
    it destroys is known only when it plans). Each entry: ``stage``, ``id``, ``what``, ``why``.
    """
    out = []
    scope = (plan or {}).get("scope") or []
    if not scope or "database" in scope:
        for step in destructive_steps(plan):
            if not step.get("runnable", True):
                continue
            out.append(
                {
                    "stage": "database",
                    "id": step.get("id"),
                    "what": "database down step %s" % _dbm.step_label(step),
                    "why": "; ".join(step.get("reasons") or [])
                    or ("irreversible" if step.get("irreversible") else "unclassified"),
                }
            )
    for step in (plan or {}).get("steps") or []:
        if step.get("stage") == "infrastructure" and step.get("kind") == "terraform":
            out.append(
                {
                    "stage": "infrastructure",
                    "id": "terraform",
                    "what": "Terraform/OpenTofu apply of the previous release's configuration",
                    "why": "the apply may destroy resources; without this approval a plan that destroys is refused",
                }
            )
    return out


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


def stage_gate(stage, results, plan=None, approval=None, binding=None, manual=None):
    """Whether ``stage`` runs: the stage table's rules, the plan's scope and the approval.

    Returns ``{"run": bool, "reason": str, "status": status to publish when it does not run,
    "reached": bool}``; ``"done": True`` when ``results`` already hold a finished result of this
    stage (an earlier attempt of the same run did it: it is not done twice). ``binding``: why the
    approval no longer binds the manifest or the inventory (``binding_problem``), or None. ``manual``: the
    run's manual step records (step id -> {status, by, at, note}); a blocking step before ``stage`` that
    has none stops it (``"stop"``, ``"waiting"``: the step's id). Used by the playbooks (through a filter)
    and by the driver alike.
    """
    if stage == "assess":
        return {"run": True, "reason": "assess always runs", "status": None, "reached": True}
    earlier = (results or {}).get(stage)
    if (
        stage != "report"
        and earlier
        and finished(earlier)
        and not (stage == "validate" and _stages.stale_validation(results))
    ):
        return {
            "run": False,
            "done": True,
            "reason": "already done by an earlier attempt of this run",
            "status": earlier.get("status"),
            "reached": True,
        }
    verdict = _stages.gate(stage, results)
    if not verdict["run"]:
        return {"run": False, "reason": verdict["reason"], "status": _stages.SKIPPED, "reached": False}
    if stage == "report":
        return {"run": True, "reason": verdict["reason"], "status": None, "reached": True}
    if stage not in (plan or {}).get("scope", []):
        return {"run": False, "reason": "not in the plan's scope", "status": _stages.SKIPPED, "reached": True}
    problem = approval_problem(plan or {}, approval) or binding
    if problem:
        return {"run": False, "reason": problem, "status": _stages.BLOCKED, "reached": True}
    waits = _manual.gate(stage, plan, manual)
    if waits:
        return waits
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


def finished(result):
    """Whether a stage result needs no further attempt: it ended ok, or out of scope."""
    return result.get("status") == _stages.OK or (
        result.get("status") == _stages.SKIPPED and result.get("reached") is not False
    )


def gated_result(stage, gate, started=None, ended=None, prior=None):
    """The result a stage publishes when its gate kept it from running (an earlier attempt's own
    result, ``prior``, when that attempt already did the stage)."""
    if gate.get("done") and prior:
        return prior
    out = {
        "stage": stage,
        "status": gate.get("status") or _stages.SKIPPED,
        "changed": False,
        "summary": gate.get("reason"),
        "hosts": {},
        "reached": gate.get("reached", False),
        "started": started,
        "ended": ended,
    }
    if gate.get("waiting"):
        # Kept from starting by a blocking manual step nobody confirmed (ansible-playbook: the run stops there).
        out["waiting"] = gate["waiting"]
    return out


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
