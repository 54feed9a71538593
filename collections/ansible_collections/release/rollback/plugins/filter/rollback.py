# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that put the collection's domain logic (plan, gates, stage results) in playbooks."""

from __future__ import annotations

import os

from ansible.errors import AnsibleFilterError
from ansible_collections.release.rollback.plugins.module_utils import manifest as _manifest
from ansible_collections.release.rollback.plugins.module_utils import plan as _plan
from ansible_collections.release.rollback.plugins.module_utils import report_record as _record
from ansible_collections.release.rollback.plugins.module_utils import stages as _stages

_EXTRA_KEYS = ("flags", "database", "infrastructure", "checks")


def parse_manifest(data, redact=False):
    """The checked manifest; ``redact=true`` hides credentials (for anything that may be shown)."""
    try:
        parsed = _manifest.parse_manifest(data)
    except _manifest.ManifestError as exc:
        raise AnsibleFilterError("bad manifest: %s" % exc) from None
    if redact and parsed.get("database"):
        parsed["database"] = dict(parsed["database"], url=_plan.redact_url(parsed["database"]["url"]))
    return parsed


# The module result a stage registers per host; a host it could not reach has no result fact.
# (assess reads with release_facts, or with release_claim when it also takes the locks.)
_REGISTERED = {"code_config": ("_rollback_code",), "assess": ("_rollback_discovery", "_rollback_claim")}


def host_result(hostvars, host, stage, plan=None):
    """``rollback_host_result_<stage>`` of ``host``, or None when it published none.

    The stage modules return it as a fact (``ansible_facts``, so no set_fact task per host), read
    here as a variable or, where facts are not injected as variables, from ``ansible_facts``. A host
    the stage could not reach counts as failed, on the release the plan found it on.
    """
    key = "rollback_host_result_" + stage
    try:
        hv = hostvars[host]
        value = hv.get(key) or (hv.get("ansible_facts") or {}).get(key)
        raw = None
        for name in () if value else _REGISTERED.get(stage, ()):
            if isinstance(hv.get(name), dict) and not hv[name].get("skipped"):
                raw = hv[name]
    except KeyError:
        return None
    if value:
        return dict(value)
    if isinstance(raw, dict) and raw.get("unreachable") and stage == "assess":
        # The transport's own error (e.g. ssh's "Connection refused"), never a bare "unreachable".
        return {"failed": True, "unreachable": True, "msg": "unreachable: %s" % (raw.get("msg") or "no answer")}
    if isinstance(raw, dict) and raw.get("unreachable"):
        live = (((plan or {}).get("hosts") or {}).get(host) or {}).get("live") or "unknown"
        return {
            "status": _stages.FAILED,
            "changed": False,
            "release": live,
            "msg": "unreachable during the rollback: %s" % raw.get("msg", ""),
        }
    return None


# Inventory variables of an application host that say how it is restarted and verified.
_SERVICE_VARS = {
    "manager": "rollback_service_manager",
    "service": "rollback_service_name",
    "restart_command": "rollback_restart_command",
    "stop_command": "rollback_stop_command",
    "start_command": "rollback_start_command",
    "health_url": "rollback_health_url",
    "version_url": "rollback_version_url",
    "code_mechanism": "rollback_code_mechanism",
}


def _getter(hostvars):
    def get(host, name):
        try:
            value = hostvars[host].get(name)
        except KeyError:
            return None
        return None if value in ("", [], None) else value

    return get


def build_plan(hosts, hostvars, manifest, options=None, db_status=None):
    """The plan from the ``rollback_host_result_assess`` facts of ``hosts``.

    ``options`` as ``plan.build_plan`` takes them, plus ``db_host`` and ``flags_host``: the inventory
    facts the approval binds and every host's service settings are read here from ``hostvars``.
    """
    options = dict(options or {})
    facts = {}
    get = _getter(hostvars)
    for host in hosts:
        facts[host] = host_result(hostvars, host, "assess") or {"failed": True, "msg": "no result (not assessed)"}
    options.setdefault(
        "host_settings",
        {h: {k: get(h, v) for k, v in _SERVICE_VARS.items()} for h in hosts},
    )
    options.setdefault("inventory_facts", _facts_now(hosts, hostvars, manifest, options))
    try:
        return _plan.build_plan(manifest, facts, db_status, options)
    except ValueError as exc:
        raise AnsibleFilterError(str(exc)) from None


def _facts_now(hosts, hostvars, manifest, options):
    db = (manifest or {}).get("database")
    db_host = options.get("db_host") if db else None
    db_url = _getter(hostvars)(db_host, "rollback_db_url") if db_host and not db.get("url") else None
    return _plan.inventory_facts(hosts, _getter(hostvars), db_host, options.get("flags_host"), db_url)


def manifest_digest(data):
    """Digest of the manifest as given (secrets included, never shown): what an approval binds."""
    try:
        return _plan.manifest_digest(_manifest.parse_manifest(data))
    except _manifest.ManifestError as exc:
        raise AnsibleFilterError("bad manifest: %s" % exc) from None


def binding_problem(plan, manifest, hostvars, db_host=None, flags_host=None):
    """Why the approval of ``plan`` no longer binds the manifest and inventory as they are now (or '')."""
    try:
        parsed = _manifest.parse_manifest(manifest)
    except _manifest.ManifestError as exc:
        return "the release manifest no longer reads (%s): build a new plan" % exc
    now = _facts_now(
        sorted((plan or {}).get("hosts") or {}),
        hostvars,
        parsed,
        {"db_host": db_host, "flags_host": flags_host},
    )
    return _plan.binding_problem(plan, _plan.manifest_digest(parsed), now) or ""


def assess_hosts(app_hosts, limit_hosts=None, exclude_hosts=None, ansible_limit_hosts=None):
    """The application hosts a plan covers, and the ones left out with why.

    ``limit_hosts``/``exclude_hosts``: the hosts ``plan --limit``/``--exclude`` name (patterns already
    expanded); ``ansible_limit_hosts``: what ``ansible-playbook --limit`` allows, when given.
    """
    covered, excluded = [], {}
    for host in app_hosts or []:
        if limit_hosts is not None and host not in limit_hosts:
            excluded[host] = "not in --limit"
        elif exclude_hosts and host in exclude_hosts:
            excluded[host] = "excluded with --exclude"
        elif ansible_limit_hosts is not None and host not in ansible_limit_hosts:
            excluded[host] = "outside ansible-playbook's --limit"
        else:
            covered.append(host)
    return {"hosts": covered, "excluded": excluded}


def inventory_problems(hosts, hostvars, manifest, groups, app_group="app", db_group="db", infra_group="infra"):
    """What is wrong with the inventory's structure, found before any host is contacted."""
    manifest = manifest or {}
    problems = []
    if not (groups or {}).get(app_group):
        problems.append(
            "the inventory has no hosts in the group %r: put the application hosts there (or set rollback_app_group)"
            % app_group
        )
    get = _getter(hostvars)
    missing = [h for h in hosts or [] if not get(h, "rollback_app_root")]
    if missing:
        problems.append(
            "rollback_app_root is not set for %s: set it to the deploy directory (the one holding releases/ and "
            "current)" % ", ".join(missing)
        )
    if manifest.get("database") and not (groups or {}).get(db_group):
        problems.append(
            "the manifest has a database section but the inventory group %r is empty: put the host that runs the "
            "migrations there (or set rollback_db_group)" % db_group
        )
    if (
        manifest.get("infrastructure")
        and manifest["infrastructure"].get("kind") != "tasks"
        and not (groups or {}).get(infra_group)
    ):
        problems.append(
            "the manifest has an infrastructure section but the inventory group %r is empty: put the load "
            "balancer or IaC host there (or set rollback_infra_group)" % infra_group
        )
    return problems


def hosts_owed(plan, prior=None, retry=None):
    """The plan's application hosts the code stage still owes (``plan.hosts_owed``)."""
    if isinstance(retry, str):
        retry = [h for h in retry.split(",") if h] or None
    return _plan.hosts_owed(plan, prior, retry)


def approval_record(plan, approver, reason=None, destructive=False):
    try:
        return _plan.approval_record(plan, approver, reason, destructive=bool(destructive))
    except ValueError as exc:
        raise AnsibleFilterError(str(exc)) from None


def stage_gate(stage, results, plan=None, approval=None, stop_file=None, binding=None, manual=None):
    """The stage table's gate. ``stop_file`` (the driver's, when it runs several stages in one job):
    once it exists the operator has asked the driver to stop, and no further stage starts.
    ``binding``: why the approval no longer binds the manifest and inventory (``binding_problem``).
    ``manual``: the run's manual step records; a blocking step nobody confirmed stops the stages after it."""
    if stop_file and os.path.exists(stop_file):
        return {
            "run": False,
            "reason": "stopped by the operator",
            "status": _stages.SKIPPED,
            "reached": False,
            "stop": True,
        }
    return _plan.stage_gate(stage, results, plan, approval, binding=binding or None, manual=manual or None)


def stage_result(
    hosts,
    stage,
    hostvars,
    gate=None,
    unreachable=None,
    started=None,
    ended=None,
    extra=None,
    plan=None,
    prior=None,
    expected=None,
):
    """Publishable result of ``stage`` from the per-host facts ``rollback_host_result_<stage>``.

    ``expected``: every host the stage owes (the code stage: the plan's hosts) when ``hosts``, the ones
    it worked on this time, are fewer: the others keep their result of an earlier attempt (``prior``),
    and a host with none is pending, on the release the plan found it on.
    """
    gate = gate or {"run": True}
    if not gate.get("run"):
        return _plan.gated_result(stage, gate, started, ended, prior=prior)
    host_results = {}
    for host in hosts:
        value = host_result(hostvars, host, stage, plan)
        if value:
            host_results[host] = value
    if expected:
        earlier = (prior or {}).get("hosts") or {}
        planned = (plan or {}).get("hosts") or {}
        for host in expected:
            if host in hosts:
                continue
            host_results[host] = dict(
                earlier.get(host)
                or {
                    "status": _stages.PENDING,
                    "changed": False,
                    "release": (planned.get(host) or {}).get("live") or "unknown",
                    "msg": "not attempted yet: still on %s" % ((planned.get(host) or {}).get("live") or "its release"),
                }
            )
        hosts = sorted(set(hosts) | set(expected))
    extra = dict(extra or {})
    for res in host_results.values():
        for k in _EXTRA_KEYS:
            if k in res and k not in extra:
                extra[k] = res.pop(k)
    result = _stages.aggregate(stage, host_results, list(hosts), unreachable=unreachable, extra=extra)
    result["started"] = started
    result["ended"] = ended
    return result


def known_bad_releases(record_file, app=None):
    """Releases the controller's release record marks rolled back / known-bad (version -> run id)."""
    return _record.known_bad(record_file, app)


def batch_halt(hosts, stage, hostvars, max_fail_percentage=0):
    """Why the remaining batches of a rolling stage stop ('' when they go on).

    Counts the hosts of earlier batches that published ``rollback_host_result_<stage>``; when the
    failed ones exceed ``max_fail_percentage`` percent of them, the rest are not changed.
    """
    done, failed = [], []
    for host in hosts:
        value = host_result(hostvars, host, stage)
        if value:
            done.append(host)
            if value.get("status") == "failed":
                failed.append(host)
    if not failed or 100.0 * len(failed) / len(done) <= float(max_fail_percentage or 0):
        return ""
    return "an earlier batch failed on %s (%d of %d host(s) done, max_fail_percentage %s)" % (
        ", ".join(sorted(failed)),
        len(failed),
        len(done),
        max_fail_percentage,
    )


def lock_refusals(hosts, hostvars):
    """``host: why`` for every host whose lock another run holds (fact ``rollback_lock_refused``)."""
    out = []
    for host in hosts:
        try:
            why = hostvars[host].get("rollback_lock_refused")
        except KeyError:
            why = None
        if why:
            out.append("%s: %s" % (host, why))
    return out


class FilterModule:
    def filters(self):
        return {
            "parse_manifest": parse_manifest,
            "build_plan": build_plan,
            "approval_record": approval_record,
            "stage_gate": stage_gate,
            "stage_result": stage_result,
            "known_bad_releases": known_bad_releases,
            "approved_steps": _plan.approved_steps,
            "destructive_changes": _plan.destructive_changes,
            "manifest_digest": manifest_digest,
            "binding_problem": binding_problem,
            "assess_hosts": assess_hosts,
            "inventory_problems": inventory_problems,
            "hosts_owed": hosts_owed,
            "flag_expectations": _plan.flag_expectations,
            "with_infra_state": _plan.with_infra_state,
            "batch_halt": batch_halt,
            "lock_refusals": lock_refusals,
        }
