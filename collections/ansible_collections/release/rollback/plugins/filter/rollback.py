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


def build_plan(hosts, hostvars, manifest, options=None, db_status=None):
    """The plan from the ``rollback_host_result_assess`` facts of ``hosts``."""
    facts = {}
    for host in hosts:
        try:
            facts[host] = hostvars[host].get("rollback_host_result_assess") or {
                "failed": True,
                "msg": "unreachable",
            }
        except KeyError:
            facts[host] = {"failed": True, "msg": "unreachable"}
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


def stage_result(hosts, stage, hostvars, gate=None, unreachable=None, started=None, ended=None, extra=None):
    """Publishable result of ``stage`` from the per-host facts ``rollback_host_result_<stage>``."""
    gate = gate or {"run": True}
    if not gate.get("run"):
        return _plan.gated_result(stage, gate, started, ended)
    key = "rollback_host_result_" + stage
    host_results = {}
    for host in hosts:
        try:
            value = hostvars[host].get(key)
        except KeyError:
            value = None
        if value:
            host_results[host] = dict(value)
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
    key = "rollback_host_result_" + stage
    done, failed = [], []
    for host in hosts:
        try:
            value = hostvars[host].get(key)
        except KeyError:
            value = None
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
