# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rollback report: one builder and one renderer for the driver and the playbook path.

Pure Python, standard library only.
"""

from __future__ import annotations

import html
import json
import os
import tempfile
from datetime import datetime, timezone

from ansible_collections.release.rollback.plugins.module_utils import stages as _stages

REPORT_SCHEMA = 1


def build(
    plan,
    approval,
    results,
    run_id=None,
    aborted=False,
    abort_reason=None,
    extra_limitations=None,
    host_spans=None,
    signoff=None,
    rca=None,
    notifications=None,
):
    """The report as data. ``results``: stage name -> published stage result.

    ``host_spans`` (stage -> host -> {started, ended}, from the stage's events) makes the timeline
    precise per host; ``signoff``, ``rca`` and ``notifications`` are the run's records of them
    (see ``read_extras``).
    """
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
        "database": (results.get("database") or {}).get("database") or _planned_database(plan, results),
        "infrastructure": (results.get("infrastructure") or {}).get("infrastructure"),
        "validation": validation,
        "window": _window(plan.get("window"), results),
        "known_limitations": limitations,
        "next_steps": _next_steps(state, results),
        "release_record": {
            "version": plan.get("from_version"),
            "status": "rolled back" if code.get("status") == _stages.OK else "not rolled back",
            "known_bad": code.get("status") == _stages.OK,
            "previous_known_good": plan.get("to_version"),
        },
        "timeline": timeline(results, host_spans),
        "signoff": signoff or None,
        "signoff_status": signoff_status(signoff),
        "rca": rca or {"status": "not configured"},
        "notifications": list(notifications or []),
    }


def _window(window, results):
    """The change window next to the time the rollback took."""
    if not window:
        return None
    ends = [r.get("ended") for r in results.values() if r and r.get("ended")]
    starts = [r.get("started") for r in results.values() if r and r.get("started")]
    out = dict(window)
    if starts and ends:
        out["rollback_started"] = min(starts)
        out["rollback_ended"] = max(ends)
        out["ended_outside"] = max(ends) > window.get("end", "")
    return out


def signoff_status(signoff):
    """One line: who signed the rollback off and when, or that it awaits sign-off."""
    if not signoff:
        return "awaiting sign-off"
    return "signed off by %s at %s" % (signoff.get("by"), signoff.get("time"))


def _parse_time(value):
    if not value:
        return None
    try:
        text = str(value).replace("Z", "+00:00")
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed


def _iso(moment):
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z" if moment else None


def host_spans(events):
    """Per-host work span of one stage from its ansible-runner events (dicts, in order).

    Only the stage's work play counts (not its gate and publish plays on localhost). Returns
    host -> {started, ended, failed, tasks}.
    """
    spans = {}
    for event in events:
        name = event.get("event") or ""
        host = event.get("host")
        play = str(event.get("play") or "")
        if not host or not name.startswith("runner_on_") or play.endswith((": gate", ": publish the result")):
            continue
        when = event.get("created")
        span = spans.setdefault(host, {"started": when, "ended": when, "failed": False, "tasks": 0})
        if span["started"] is None or (when and when < span["started"]):
            span["started"] = when
        if when and (span["ended"] is None or when > span["ended"]):
            span["ended"] = when
        if name in ("runner_on_failed", "runner_on_unreachable") and not event.get("ignore_errors"):
            span["failed"] = True
        if name != "runner_on_start":
            span["tasks"] += 1
    return spans


def timeline(results, spans=None):
    """The stages and their hosts in time: where the time went and what failed."""
    spans = spans or {}
    rows = []
    for entry in _stages.STAGES:
        name = entry["name"]
        res = results.get(name)
        row = {"stage": name, "title": entry["title"], "status": "not run", "started": None, "ended": None}
        row.update({"duration_s": None, "hosts": []})
        if res is not None:
            started = _parse_time(res.get("started"))
            ended = _parse_time(res.get("ended"))
            stage_spans = spans.get(name) or {}
            hosts = []
            for host, hres in sorted((res.get("hosts") or {}).items()):
                span = stage_spans.get(host) or {}
                h_start = _parse_time(span.get("started")) or started
                h_end = _parse_time(span.get("ended")) or ended
                hosts.append(
                    {
                        "host": host,
                        "status": hres.get("status"),
                        "msg": hres.get("msg"),
                        "started": _iso(h_start),
                        "ended": _iso(h_end),
                        "duration_s": round((h_end - h_start).total_seconds(), 2) if h_start and h_end else None,
                    }
                )
                # Events are more precise than the stage's own second-resolution stamps.
                if h_start and (started is None or h_start < started):
                    started = h_start
                if h_end and (ended is None or h_end > ended):
                    ended = h_end
            row.update(
                {
                    "status": res.get("status"),
                    "summary": res.get("summary"),
                    "started": _iso(started),
                    "ended": _iso(ended),
                    "duration_s": round((ended - started).total_seconds(), 2) if started and ended else None,
                    "hosts": hosts,
                }
            )
        rows.append(row)
    return rows


def _planned_database(plan, results):
    """The plan's database steps, for a database stage that its gate kept from the database."""
    db = plan.get("database")
    if not db or "database" not in results:
        return None
    return {
        "tool": db.get("tool"),
        "from_revision": db.get("current_revision"),
        "to_revision": db.get("target_revision"),
        "current": "%s (not touched)" % db.get("current_revision"),
        "steps": db.get("steps") or [],
    }


def _next_steps(state, results):
    if state == _stages.COMPLETED:
        return ["Watch the service's monitoring; open the root-cause analysis for the rolled-back release."]
    hint = _database_hint(results.get("database") or {})
    if state == _stages.RUN_BLOCKED:
        return hint or ["Resolve the blockers above, then plan and approve again. Nothing was changed."]
    if state == _stages.ABORTED:
        return ["Check the hosts listed above, then `release-rollback resume RUN_DIR` or start a new plan."]
    out = list(hint)
    for name in _stages.EXECUTION_STAGES:
        res = results.get(name)
        if res is None or res.get("status") not in (_stages.OK, _stages.SKIPPED):
            out.append("Stage %s: fix the cause above, then `release-rollback resume RUN_DIR`." % name)
            break
    return out or ["Re-run validation with `release-rollback resume RUN_DIR` after mitigation."]


def _database_hint(db):
    """What to do about a database stage that refused or failed (empty when it did neither)."""
    if db.get("status") == _stages.BLOCKED and "cannot run" in str(db.get("summary")):
        return [
            "Database: the down steps named above cannot run; with a DBA, keep the schema and roll it forward "
            "with a new migration, or restore a backup taken before the release. Nothing was changed in the database."
        ]
    if db.get("status") == _stages.BLOCKED:
        return [
            "Database: review the down steps named above. If losing that data is acceptable, approve them with "
            "`release-rollback approve PLAN --approver NAME --destructive` and run `release-rollback resume RUN_DIR`; "
            "otherwise keep the schema and roll it forward with a new migration."
        ]
    backup = (db.get("database") or {}).get("backup")
    if db.get("status") == _stages.FAILED and backup:
        return [
            "Database: escalate to the DBA with the revision reached and the backup %s (restore: %s)."
            % (backup.get("path"), backup.get("restore_command"))
        ]
    return []


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
        if appr.get("break_glass"):
            lines.append("- **BREAK-GLASS self-approval:** %s" % appr["break_glass"])
    else:
        lines.append("- **Approved by:** nobody")
    if rep.get("window"):
        lines.append(
            "- **Change window:** %s - %s%s"
            % (
                rep["window"].get("start"),
                rep["window"].get("end"),
                " (ended outside it)" if rep["window"].get("ended_outside") else "",
            )
        )
    rec = rep.get("release_record") or {}
    lines.append(
        "- **Release record:** %s %s%s; previous known-good release %s"
        % (
            rec.get("version"),
            rec.get("status"),
            " (known-bad)" if rec.get("known_bad") else "",
            rec.get("previous_known_good"),
        )
    )
    lines.append("- **Sign-off:** %s" % (rep.get("signoff_status") or "awaiting sign-off"))
    lines.append("- **RCA:** %s" % rca_line(rep.get("rca")))
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
        lines += [
            "",
            "## Feature flags",
            "",
            "| flag | backend | before | after | turned off at | note |",
            "|---|---|---|---|---|---|",
        ]
        for name, st in sorted(rep["flags"].items()):
            note = "LEFT ON: %s" % st.get("error", "not turned off") if st.get("left_on") else ""
            lines.append(
                "| %s | %s | %s | %s | %s | %s |"
                % (
                    name,
                    st.get("backend") or "",
                    _flag_word(st.get("before")),
                    _flag_word(st.get("after")),
                    st.get("time") or "",
                    note.replace("|", "\\|").replace("\n", " "),
                )
            )
    if rep.get("database"):
        lines += _database_lines(rep["database"])
    if rep.get("infrastructure"):
        lines += ["", "## Infrastructure", ""] + _infrastructure_lines(rep["infrastructure"])
    if rep.get("validation"):
        lines += ["", "## Validation", "", "| host | status | detail |", "|---|---|---|"]
        for host, res in sorted(rep["validation"].items()):
            lines.append("| %s | %s | %s |" % (host, res.get("status"), res.get("msg") or ""))
    if rep.get("timeline"):
        lines += [
            "",
            "## Timeline",
            "",
            "| stage | host | status | started | ended | seconds |",
            "|---|---|---|---|---|---|",
        ]
        for row in rep["timeline"]:
            lines.append(
                "| %s | | %s | %s | %s | %s |"
                % (row["stage"], row["status"], row.get("started") or "", row.get("ended") or "", _secs(row))
            )
            for h in row.get("hosts") or []:
                lines.append(
                    "| | %s | %s | %s | %s | %s |"
                    % (h["host"], h.get("status"), h.get("started") or "", h.get("ended") or "", _secs(h))
                )
    if rep.get("checks"):
        lines += ["", "## Validation checks", ""] + _checks_lines(rep["checks"])
    lines += ["", "## Known limitations", ""]
    lines += ["- %s" % item for item in rep.get("known_limitations") or []] or ["- none"]
    lines += ["", "## Next steps", ""]
    lines += ["- %s" % item for item in rep.get("next_steps") or []]
    if rep.get("notifications"):
        lines += ["", "## Notifications", ""]
        for n in rep["notifications"]:
            lines.append("- %s %s via %s: %s" % (n.get("time"), n.get("event"), n.get("channel"), n.get("outcome")))
    return "\n".join(lines) + "\n"


def _secs(row):
    return "" if row.get("duration_s") is None else "%.1f" % row["duration_s"]


def rca_line(rca):
    """One line about the root-cause analysis ticket."""
    rca = rca or {}
    status = rca.get("status")
    if status == "filed":
        return "RCA ticket %s filed in %s: %s" % (rca.get("key"), rca.get("tracker"), rca.get("url"))
    if status == "pending":
        return "RCA pending (%s): retry with `release-rollback rca RUN_DIR`" % (rca.get("error") or "not filed yet")
    return "no tracker configured: open the root-cause analysis by hand"


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 8px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d8dce3;padding-bottom:4px}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{border:1px solid #d8dce3;padding:4px 8px;text-align:left;
vertical-align:top}th{background:#eef0f4}code{font-size:12px;word-break:break-all}
.badge{display:inline-block;padding:2px 10px;border-radius:10px;color:#fff;font-weight:600}
.s-ok,.s-completed{background:#1f8a4c}.s-failed,.s-aborted{background:#c62828}.s-unavailable,
.s-partially-completed{background:#e08a00}.s-blocked{background:#6a1b9a}.s-skipped,.s-not-run{background:#8a94a6}
.signoff{margin:8px 0;padding:8px 12px;border-radius:6px;background:#fff4d6;border:1px solid #e0b54a}
.signoff.done{background:#e3f4e9;border-color:#7cc49a}
#timeline{background:#fff;border:1px solid #d8dce3;padding:10px}
.tl-row{display:flex;align-items:center;height:24px}.tl-row.host{height:18px;font-size:12px;color:#4a5366}
.tl-label{width:260px;box-sizing:border-box;flex:none;overflow:hidden;white-space:nowrap;text-overflow:ellipsis}
.tl-row.host .tl-label{padding-left:18px}
.tl-track{position:relative;flex:1;height:100%;border-left:1px solid #d8dce3}
.tl-bar{position:absolute;top:4px;bottom:4px;min-width:3px;border-radius:3px}
.tl-row.host .tl-bar{top:4px;bottom:4px;opacity:.8}
.tl-dur{width:80px;flex:none;text-align:right;font-variant-numeric:tabular-nums}
.tl-axis{display:flex;justify-content:space-between;margin-left:260px;margin-right:80px;font-size:11px;color:#6b7385}
.failed-list li{color:#8e1c1c}
"""


def _e(value):
    return html.escape("" if value is None else str(value), quote=True)


def _cls(status):
    return "s-" + str(status or "not run").replace(" ", "-")


def _badge(status):
    return '<span class="badge %s">%s</span>' % (_cls(status), _e(status or "not run"))


def _table(headers, rows):
    out = ["<table>"]
    if headers:
        out.append("<tr>%s</tr>" % "".join("<th>%s</th>" % _e(h) for h in headers))
    for row in rows:
        out.append("<tr>%s</tr>" % "".join("<td>%s</td>" % cell for cell in row))
    out.append("</table>")
    return "".join(out)


def _timeline_html(rows):
    moments = []
    for row in rows:
        for key in ("started", "ended"):
            moment = _parse_time(row.get(key))
            if moment:
                moments.append(moment)
    t0 = min(moments) if moments else None
    total = (max(moments) - t0).total_seconds() if moments else 0.0
    total = total or 1.0

    def span_bar(item):
        start, end = _parse_time(item.get("started")), _parse_time(item.get("ended"))
        if not (t0 and start and end):
            return ""
        left = 100.0 * (start - t0).total_seconds() / total
        width = 100.0 * max((end - start).total_seconds(), 0.0) / total
        return '<div class="tl-bar %s" style="left:%.2f%%;width:%.2f%%" title="%s"></div>' % (
            _cls(item.get("status")),
            left,
            width,
            _e("%s -> %s" % (item.get("started"), item.get("ended"))),
        )

    out = ['<div id="timeline">']
    for row in rows:
        out.append(
            '<div class="tl-row stage" data-stage="%s" data-status="%s"><div class="tl-label">%s %s</div>'
            '<div class="tl-track">%s</div><div class="tl-dur">%s</div></div>'
            % (
                _e(row["stage"]),
                _e(row["status"]),
                _badge(row["status"]),
                _e(row["stage"]),
                span_bar(row),
                _e(_secs(row) + " s" if row.get("duration_s") is not None else "not run"),
            )
        )
        for h in row.get("hosts") or []:
            out.append(
                '<div class="tl-row host" data-stage="%s" data-host="%s" data-status="%s"><div class="tl-label" '
                'title="%s">%s: %s</div><div class="tl-track">%s</div><div class="tl-dur">%s</div></div>'
                % (
                    _e(row["stage"]),
                    _e(h["host"]),
                    _e(h.get("status")),
                    _e(h.get("msg")),
                    _e(h["host"]),
                    _e(h.get("status")),
                    span_bar(h),
                    _e(_secs(h) + " s" if h.get("duration_s") is not None else ""),
                )
            )
    out.append(
        '<div class="tl-axis"><span>0 s</span><span>%.1f s</span><span>%.1f s</span><span>%.1f s</span>'
        "<span>%.1f s</span></div>" % (total / 4, total / 2, 3 * total / 4, total)
    )
    out.append("</div>")
    return "".join(out)


def render_html(rep):
    """A self-contained page (no script, no external resource) with the stages and hosts in time."""
    title = "Rollback report: %s %s -> %s" % (rep.get("app"), rep.get("from_version"), rep.get("to_version"))
    appr = rep.get("approval") or {}
    rec = rep.get("release_record") or {}
    rows = rep.get("timeline") or []
    timed = [r for r in rows if r.get("duration_s") is not None]
    longest = max(timed, key=lambda r: r["duration_s"]) if timed else None
    failures = []
    for row in rows:
        for h in row.get("hosts") or []:
            if h.get("status") not in ("ok", "skipped", None):
                failures.append("%s on %s: %s (%s)" % (row["stage"], h["host"], h.get("status"), h.get("msg")))
        if row["status"] not in ("ok", "skipped", "not run") and not any(
            h.get("status") not in ("ok", "skipped") for h in row.get("hosts") or []
        ):
            failures.append("%s: %s (%s)" % (row["stage"], row["status"], row.get("summary")))
    signed = bool(rep.get("signoff"))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>%s</title><style>%s</style></head><body><main>" % (_e(title), _CSS),
        "<h1>%s</h1>" % _e(title),
        '<p id="exit-state">Exit state: %s (exit code %s)</p>'
        % (_badge(rep.get("exit_state")), _e(rep.get("exit_code"))),
        '<div id="signoff" class="signoff%s">%s</div>'
        % (" done" if signed else "", _e(rep.get("signoff_status") or "awaiting sign-off")),
        _table(
            None,
            [
                ["Run", _e(rep.get("run_id"))],
                ["Reason", _e(rep.get("reason"))],
                ["Scope", _e(", ".join(rep.get("scope") or []))],
                ["Plan hash", "<code>%s</code>" % _e(rep.get("plan_hash"))],
                [
                    "Approved by",
                    _e(
                        "%s at %s%s"
                        % (
                            appr.get("approver"),
                            appr.get("time"),
                            (" (%s)" % appr["reason"]) if appr.get("reason") else "",
                        )
                        if appr
                        else "nobody"
                    ),
                ],
                [
                    "Release record",
                    _e(
                        "%s %s%s; previous known-good release %s"
                        % (
                            rec.get("version"),
                            rec.get("status"),
                            " (known-bad)" if rec.get("known_bad") else "",
                            rec.get("previous_known_good"),
                        )
                    ),
                ],
                ["RCA", '<span id="rca">%s</span>' % _e(rca_line(rep.get("rca")))],
                ["Generated", _e(rep.get("generated"))],
            ],
        ),
        "<h2>Timeline</h2>",
        "<p>%s</p>" % _e("Most time: %s (%s s)." % (longest["stage"], _secs(longest)) if longest else "No stage ran."),
        _timeline_html(rows),
    ]
    if failures:
        parts.append(
            '<h2>What failed</h2><ul class="failed-list">%s</ul>' % "".join("<li>%s</li>" % _e(f) for f in failures)
        )
    parts.append("<h2>Steps</h2>")
    parts.append(
        _table(
            ["stage", "status", "started", "ended", "summary"],
            [
                [_e(s["stage"]), _badge(s["status"]), _e(s.get("started")), _e(s.get("ended")), _e(s.get("summary"))]
                for s in rep.get("steps") or []
            ],
        )
    )
    if rep.get("host_releases"):
        parts.append("<h2>Hosts</h2>")
        parts.append(_table(["host", "release"], [[_e(h), _e(r)] for h, r in sorted(rep["host_releases"].items())]))
    if rep.get("flags"):
        parts.append("<h2>Feature flags</h2>")
        parts.append(
            _table(
                ["flag", "before", "after"],
                [
                    [_e(n), _e(_flag_word(st.get("before"))), _e(_flag_word(st.get("after")))]
                    for n, st in sorted(rep["flags"].items())
                ],
            )
        )
    if rep.get("database"):
        db = rep["database"]
        parts.append(
            "<h2>Database</h2><p>%s</p>"
            % _e(
                "from revision %s to %s (now %s)" % (db.get("from_revision"), db.get("to_revision"), db.get("current"))
            )
        )
    if rep.get("infrastructure"):
        inf = rep["infrastructure"]
        parts.append(
            "<h2>Infrastructure</h2><p>%s</p>" % _e("%s restored from %s" % (inf.get("path"), inf.get("snapshot")))
        )
    if rep.get("validation"):
        parts.append("<h2>Validation</h2>")
        parts.append(
            _table(
                ["host", "status", "detail"],
                [[_e(h), _badge(r.get("status")), _e(r.get("msg"))] for h, r in sorted(rep["validation"].items())],
            )
        )
    parts.append(
        "<h2>Known limitations</h2><ul>%s</ul>"
        % ("".join("<li>%s</li>" % _e(x) for x in rep.get("known_limitations") or []) or "<li>none</li>")
    )
    parts.append("<h2>Next steps</h2><ul>%s</ul>" % "".join("<li>%s</li>" % _e(x) for x in rep.get("next_steps") or []))
    if rep.get("notifications"):
        parts.append("<h2>Notifications</h2>")
        parts.append(
            _table(
                ["time", "event", "channel", "outcome"],
                [
                    [_e(n.get("time")), _e(n.get("event")), _e(n.get("channel")), _e(n.get("outcome"))]
                    for n in rep["notifications"]
                ],
            )
        )
    parts.append("</main></body></html>")
    return "\n".join(parts) + "\n"


def _database_lines(db):
    lines = [
        "",
        "## Database",
        "",
        "- %s: from revision %s to %s (now %s)"
        % (db.get("tool"), db.get("from_revision"), db.get("to_revision"), db.get("current")),
    ]
    for step in db.get("steps") or []:
        kind = (
            "irreversible" if step.get("irreversible") else "destructive" if step.get("destructive") else "reversible"
        )
        done = "applied" if "%s -> %s" % (step.get("revision"), step.get("to")) in (db.get("applied") or []) else ""
        lines.append(
            "- down step %s -> %s: %s%s%s"
            % (
                step.get("revision"),
                step.get("to"),
                kind,
                " (%s)" % "; ".join(step["reasons"]) if step.get("reasons") else "",
                ", " + done if done else "",
            )
        )
    if db.get("failed_step"):
        lines.append(
            "- **failed at step %s**; the database is at revision %s%s"
            % (db["failed_step"], db.get("current"), " (marked dirty)" if db.get("dirty") else "")
        )
    half = db.get("half_applied")
    if half:
        lines.append(
            "- **half-applied** at revision %s (its DDL is not transactional): %s"
            % (half.get("revision"), "; ".join(half.get("changes") or []))
        )
    backup = db.get("backup")
    if backup:
        lines += [
            "- backup (%s, %s bytes): `%s`" % (backup.get("tool"), backup.get("size"), backup.get("path")),
            "- backup checksum: `%s`" % backup.get("sha256"),
            "- restore: `%s`" % backup.get("restore_command"),
        ]
    for check in db.get("integrity") or []:
        verdict = "ok" if check.get("ok") else "FAILED"
        lines.append("- integrity: %s: %s (%s)" % (check.get("check"), verdict, check.get("detail")))
    return lines


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
    if "defaultVariant" in state:
        return "on (%s, default %s)" % (state.get("state"), state.get("defaultVariant"))
    return "on (%s)" % state.get("state")


def _write(path, text):
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".report-", dir=directory)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def write(run_dir, rep):
    """Write report.json, report.md and report.html into ``run_dir``; returns their paths."""
    os.makedirs(run_dir, exist_ok=True)
    paths = {name: os.path.join(run_dir, "report." + name) for name in ("json", "md", "html")}
    _write(paths["json"], json.dumps(rep, indent=2, sort_keys=True, default=str) + "\n")
    _write(paths["md"], render_markdown(rep))
    _write(paths["html"], render_html(rep))
    return paths


RENDERERS = {
    "md": render_markdown,
    "html": render_html,
    "json": lambda rep: json.dumps(rep, indent=2, sort_keys=True, default=str) + "\n",
}


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def load_host_spans(run_dir):
    """stage -> host -> span, from the run's ``events/<stage>.jsonl`` files (driver runs)."""
    spans = {}
    for entry in _stages.STAGES:
        path = os.path.join(run_dir, "events", entry["name"] + ".jsonl")
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as fh:
            spans[entry["name"]] = host_spans(_json_lines(fh))
    return spans


def _json_lines(fh):
    for line in fh:
        try:
            yield json.loads(line)
        except ValueError:
            continue


def build_for_run(run_dir, plan, approval, results, aborted=False, abort_reason=None):
    """``build`` with everything the run directory holds: host spans, sign-off, RCA, notifications."""
    return build(
        plan,
        approval,
        results,
        run_id=os.path.basename(os.path.normpath(run_dir)),
        aborted=aborted,
        abort_reason=abort_reason,
        host_spans=load_host_spans(run_dir),
        **read_extras(run_dir),
    )


def read_extras(run_dir):
    """The run's sign-off, RCA and notification records, as ``build`` takes them."""
    notes = []
    trail = os.path.join(run_dir, "audit.jsonl")
    if os.path.exists(trail):
        with open(trail, encoding="utf-8") as fh:
            for line in fh:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry.get("event") == "notification":
                    notes.append({k: entry.get(k) for k in ("time", "event", "channel", "outcome")})
                    notes[-1]["event"] = entry.get("about")
    return {
        "signoff": _read_json(os.path.join(run_dir, "signoff.json")),
        "rca": _read_json(os.path.join(run_dir, "rca.json")),
        "notifications": notes,
    }


def known_bad(record_file, app=None):
    """Releases the controller's release record marks rolled back / known-bad: version -> run id.

    ``app`` limits it to one application. A missing or unreadable record is empty.
    """
    out = {}
    if not record_file or not os.path.exists(record_file):
        return out
    with open(record_file, encoding="utf-8") as fh:
        for entry in _json_lines(fh):
            if not isinstance(entry, dict) or not entry.get("version"):
                continue
            if app and entry.get("app") not in (None, app):
                continue
            if entry.get("known_bad") or entry.get("status") == "rolled_back":
                out[str(entry["version"])] = entry.get("run_id")
            elif entry.get("status") == "good":
                out.pop(str(entry["version"]), None)  # cleared after a fix: usable again
    return out


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


def with_report_done(results):
    """The stage results with the report stage counted as done (the report being written is its work)."""
    results = dict(results)
    results.setdefault("report", {"stage": "report", "status": "ok", "summary": "this report", "changed": True})
    return results


def write_run_report(run_dir, plan, approval, results, record_file=None, audit_stages=False):
    """The report stage's work, shared by the rollback_report module and the driver.

    Writes report.md/json/html with the report stage counted as done, records the release as rolled
    back in ``record_file`` (JSON lines), and appends ``report.written`` (and with ``audit_stages``
    one ``stage.result`` per stage and ``run.end``: runs without the driver) to the audit trail.
    Returns ``(report, paths, recorded)``; raises OSError when the run directory cannot be written.
    """
    from ansible_collections.release.rollback.plugins.module_utils import audit as _audit

    rep = build_for_run(run_dir, plan, approval, with_report_done(results))
    paths = write(run_dir, rep)
    recorded = record_release(record_file, rep)
    trail = os.path.join(run_dir, "audit.jsonl")
    if audit_stages:
        for step in rep["steps"]:
            summary = step.get("summary")
            _audit.append(trail, "stage.result", stage=step["stage"], status=step["status"], summary=summary)
        _audit.append(trail, "run.end", exit_state=rep["exit_state"])
    _audit.append(trail, "report.written", exit_state=rep["exit_state"], report=paths["json"], recorded=recorded)
    return rep, paths, recorded
