#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: service_checks
short_description: Smoke tests, Prometheus thresholds and Alertmanager alerts for a rolled-back service
version_added: "1.0.0"
description:
  - Runs the manifest's service-level checks once (from the controller) and returns every check's value,
    threshold, result and time, so that they can go into the rollback report.
  - Smoke checks are HTTP requests (expected status) or commands (exit 0), each with its own timeout.
  - Prometheus checks are instant queries (C(/api/v1/query)); the worst value of the result vector must stay at or
    below C(max) (or at or above C(min)). A query without data fails unless C(empty=pass).
  - The Alertmanager check asks C(/api/v2/alerts) for active, unsilenced, uninhibited alerts matching the
    matchers; any such alert fails it. Silenced alerts are counted and reported, never failed.
  - A failed check does not fail the task; RV(passed) says whether every check passed.
options:
  smoke:
    description: Checks C({name, url, status, timeout}) or C({name, command, timeout}).
    type: list
    elements: dict
    default: []
  prometheus:
    description: C({url, queries, retries, delay}); each query is C({name, query, max or min, empty}).
    type: dict
  alertmanager:
    description: C({url, matchers, retries, delay}); matchers are C(label="value") strings.
    type: dict
requirements:
  - The commands given as smoke checks (O(smoke)) on the host. Prometheus and Alertmanager are read over HTTP.
attributes:
  check_mode:
    description: Can run in check mode and return the changed status prediction without modifying the target.
    support: full
    details:
      - The smoke commands are not run in check mode, because a smoke command may change things; each is
        listed as skipped, with why.
      - Prometheus and Alertmanager are read once, without retries, and not judged, since nothing was rolled back
        that they could show; what they answered is in each check's value in RV(checks).
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
- name: Check the error rate and the alerts of the shop
  release.rollback.service_checks:
    prometheus:
      url: http://prometheus:9090
      queries:
        - name: error rate
          query: sum(rate(http_requests_total{code=~"5.."}[5m])) / sum(rate(http_requests_total[5m]))
          max: 0.01
    alertmanager:
      url: http://alertmanager:9093
      matchers: ['service="shop"']
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
checks:
  description:
    - One entry per check with kind, name, target, value, threshold, ok, msg, time and attempts.
    - In check mode each entry has skipped set, since nothing is judged.
  returned: always
  type: list
  elements: dict
passed:
  description: Whether every check passed.
  returned: always
  type: bool
"""

import json
import math
import shlex
import subprocess
import time
from datetime import datetime, timezone
from urllib.parse import urlencode

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import open_url


def _now():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _get(url, timeout):
    """(status, body) of a GET; status 0 with the error text when nothing answered."""
    try:
        resp = open_url(url, timeout=timeout, validate_certs=False, follow_redirects="none")
        return resp.getcode(), resp.read().decode("utf-8", "replace")
    except Exception as exc:
        code = getattr(exc, "code", None)
        if code is not None:
            try:
                return code, exc.read().decode("utf-8", "replace")
            except Exception:
                return code, ""
        return 0, str(exc)


def smoke_check(check):
    rec = {"kind": "smoke", "name": check.get("name"), "attempts": 1, "time": _now()}
    timeout = float(check.get("timeout") or 30)
    if check.get("command"):
        argv = check["command"] if isinstance(check["command"], list) else shlex.split(check["command"])
        rec.update(target=" ".join(argv), threshold="exit 0")
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
            rec["value"] = "exit %d" % proc.returncode
            rec["ok"] = proc.returncode == 0
            rec["msg"] = "" if rec["ok"] else (proc.stderr or proc.stdout).strip()[-300:]
        except subprocess.TimeoutExpired:
            rec.update(value="timeout", ok=False, msg="did not finish within %ss" % timeout)
        except OSError as exc:
            rec.update(value="not run", ok=False, msg=str(exc))
        return rec
    status, body = _get(check["url"], timeout)
    want = int(check.get("status") or 200)
    rec.update(target=check["url"], threshold="HTTP %d" % want, value="HTTP %s" % status if status else "no answer")
    rec["ok"] = status == want
    rec["msg"] = "" if rec["ok"] else ("answered %s" % status if status else body[:300])
    return rec


def _prom_value(body):
    """The values of an instant query's result (vector or scalar), NaN dropped."""
    data = json.loads(body)
    if data.get("status") != "success":
        raise ValueError(data.get("error") or "query failed")
    result = data["data"]
    if result["resultType"] in ("scalar", "string"):
        values = [result["result"][1]]
    elif result["resultType"] == "vector":
        values = [sample["value"][1] for sample in result["result"]]
    else:
        raise ValueError("the query returns a %s: use an instant vector or a scalar" % result["resultType"])
    out = [float(v) for v in values]
    return [v for v in out if not math.isnan(v)]


def prometheus_check(prom, query):
    bound = "max" if "max" in query else "min"
    limit = float(query[bound])
    rec = {
        "kind": "prometheus",
        "name": query.get("name"),
        "target": query["query"],
        "threshold": ("<= %s" if bound == "max" else ">= %s") % query[bound],
    }
    url = "%s/api/v1/query?%s" % (prom["url"], urlencode({"query": query["query"]}))
    status, body = _get(url, float(prom.get("timeout") or 10))
    rec["time"] = _now()
    if status != 200:
        rec.update(value=None, ok=False, msg="Prometheus answered %s: %s" % (status or "nothing", body[:200]))
        return rec
    try:
        values = _prom_value(body)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        rec.update(value=None, ok=False, msg="cannot read the query's result: %s" % exc)
        return rec
    if not values:
        ok = query.get("empty") == "pass"
        why = "the query returned no data (add `or vector(0)` if none means zero)"
        rec.update(value="no data", ok=ok, msg="" if ok else why)
        return rec
    worst = max(values) if bound == "max" else min(values)
    rec["value"] = worst
    rec["ok"] = worst <= limit if bound == "max" else worst >= limit
    side = "above" if bound == "max" else "below"
    rec["msg"] = "" if rec["ok"] else "%s is %s the threshold %s" % (worst, side, limit)
    return rec


def _alerts(am, silenced):
    params = [("active", "true"), ("silenced", silenced), ("inhibited", "false"), ("unprocessed", "false")]
    params += [("filter", m) for m in am["matchers"]]
    status, body = _get("%s/api/v2/alerts?%s" % (am["url"], urlencode(params)), float(am.get("timeout") or 10))
    if status != 200:
        raise ValueError("Alertmanager answered %s: %s" % (status or "nothing", body[:200]))
    return json.loads(body)


def alertmanager_check(am):
    rec = {
        "kind": "alertmanager",
        "name": "active unsilenced alerts",
        "target": ", ".join(am["matchers"]),
        "threshold": "== 0",
    }
    try:
        firing = [a for a in _alerts(am, "false") if (a.get("status") or {}).get("state") == "active"]
        silenced = [a for a in _alerts(am, "true") if (a.get("status") or {}).get("state") == "suppressed"]
    except ValueError as exc:
        rec.update(time=_now(), value=None, ok=False, msg=str(exc))
        return rec
    rec["time"] = _now()
    rec["value"] = len(firing)
    rec["ok"] = not firing
    names = sorted({(a.get("labels") or {}).get("alertname", "?") for a in firing})
    rec["alerts"] = names
    rec["silenced"] = sorted({(a.get("labels") or {}).get("alertname", "?") for a in silenced})
    rec["msg"] = "" if rec["ok"] else "firing: %s" % ", ".join(names)
    return rec


def _with_retries(section, check):
    """Evaluate ``check()`` until it passes or the section's retries are used up."""
    retries = max(1, int(section.get("retries") or 1))
    for attempt in range(1, retries + 1):
        rec = check()
        rec["attempts"] = attempt
        if rec["ok"] or attempt == retries:
            return rec
        time.sleep(float(section.get("delay") or 0))
    return rec


def dry_run(p):
    """Check mode: no smoke command runs (it may change things); monitoring is read once and not judged,
    since nothing was rolled back that it could show."""
    checks = []
    for check in p["smoke"] or []:
        checks.append(
            {
                "kind": "smoke",
                "name": check.get("name"),
                "attempts": 0,
                "time": _now(),
                "value": None,
                "ok": True,
                "skipped": True,
                "msg": "not run in check mode: a smoke command may change things",
            }
        )
    read = []
    prom = p["prometheus"]
    if prom:
        read += [prometheus_check(prom, q) for q in prom.get("queries") or []]
    if p["alertmanager"]:
        read.append(alertmanager_check(p["alertmanager"]))
    for rec in read:
        now = "passes" if rec["ok"] else "fails (%s)" % rec.get("msg")
        rec.update(
            ok=True, skipped=True, msg="check mode: read once, not judged (it %s now, before any rollback)" % now
        )
        checks.append(rec)
    return dict(
        changed=False,
        checks=checks,
        passed=True,
        msg="check mode: %d check(s) not judged; smoke commands not run" % len(checks),
    )


def main():
    module = AnsibleModule(
        argument_spec=dict(
            smoke=dict(type="list", elements="dict", default=[]),
            prometheus=dict(type="dict"),
            alertmanager=dict(type="dict"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if module.check_mode:
        module.exit_json(**dry_run(p))
    checks = [smoke_check(c) for c in p["smoke"] or []]
    prom = p["prometheus"]
    if prom:
        for query in prom.get("queries") or []:
            checks.append(_with_retries(prom, lambda q=query: prometheus_check(prom, q)))
    am = p["alertmanager"]
    if am:
        checks.append(_with_retries(am, lambda: alertmanager_check(am)))
    failed = [c for c in checks if not c["ok"]]
    module.exit_json(
        changed=False,
        checks=checks,
        passed=not failed,
        msg="; ".join("%s %s: %s" % (c["kind"], c["name"], c["msg"]) for c in failed) or "all checks passed",
    )


if __name__ == "__main__":
    main()
