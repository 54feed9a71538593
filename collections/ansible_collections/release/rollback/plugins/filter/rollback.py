# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that put the collection's domain logic (plan, gates, stage results) in playbooks."""

from __future__ import annotations

import os

from ansible.errors import AnsibleFilterError
from ansible_collections.release.rollback.plugins.module_utils import manifest as _manifest
from ansible_collections.release.rollback.plugins.module_utils import plan as _plan
from ansible_collections.release.rollback.plugins.module_utils import report as _report
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
_REGISTERED = {"code_config": "_rollback_code"}


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
        raw = None if value else hv.get(_REGISTERED.get(stage, "_rollback_no_register"))
    except KeyError:
        return None
    if value:
        return dict(value)
    if isinstance(raw, dict) and raw.get("unreachable"):
        live = (((plan or {}).get("hosts") or {}).get(host) or {}).get("live") or "unknown"
        return {
            "status": _stages.FAILED,
            "changed": False,
            "release": live,
            "msg": "unreachable during the rollback: %s" % raw.get("msg", ""),
        }
    return None


def build_plan(hosts, hostvars, manifest, options=None, db_status=None):
    """The plan from the ``rollback_host_result_assess`` facts of ``hosts``."""
    facts = {}
    for host in hosts:
        facts[host] = host_result(hostvars, host, "assess") or {"failed": True, "msg": "unreachable"}
    try:
        return _plan.build_plan(manifest, facts, db_status, options)
    except ValueError as exc:
        raise AnsibleFilterError(str(exc)) from None


def approval_record(plan, approver, reason=None, destructive=False):
    try:
        return _plan.approval_record(plan, approver, reason, destructive=bool(destructive))
    except ValueError as exc:
        raise AnsibleFilterError(str(exc)) from None


def stage_gate(stage, results, plan=None, approval=None, stop_file=None):
    """The stage table's gate. ``stop_file`` (the driver's, when it runs several stages in one job):
    once it exists the operator has asked the driver to stop, and no further stage starts."""
    if stop_file and os.path.exists(stop_file):
        return {
            "run": False,
            "reason": "stopped by the operator",
            "status": _stages.SKIPPED,
            "reached": False,
            "stop": True,
        }
    return _plan.stage_gate(stage, results, plan, approval)


def stage_result(hosts, stage, hostvars, gate=None, unreachable=None, started=None, ended=None, extra=None, plan=None):
    """Publishable result of ``stage`` from the per-host facts ``rollback_host_result_<stage>``."""
    gate = gate or {"run": True}
    if not gate.get("run"):
        return _plan.gated_result(stage, gate, started, ended)
    host_results = {}
    for host in hosts:
        value = host_result(hostvars, host, stage, plan)
        if value:
            host_results[host] = value
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
    return _report.known_bad(record_file, app)


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
            "batch_halt": batch_halt,
            "lock_refusals": lock_refusals,
        }
