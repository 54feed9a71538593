# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The report model: every fact of a run, decided once, as data and as sections of facts.

``build`` turns a run (plan, approval, stage results, the run's records) into one dict. Its data
keys (``exit_state``, ``steps``, ``flags``, ``database``, ...) are what programs read; its
``sections`` are the same facts worded for people: a list of sections, each with facts (a label
and text parts), an optional table and an optional list. Markdown, HTML, JSON, the terminal
summary and the notification texts render ``sections`` (see ``report_render``) and decide
nothing about what a fact means: that happens here, once.

Pure Python, standard library only.
"""

from __future__ import annotations

from datetime import datetime, timezone

from ansible_collections.release.rollback.plugins.module_utils import manual as _manual
from ansible_collections.release.rollback.plugins.module_utils import stages as _stages

REPORT_SCHEMA = 2
NOT_RUN = "not run"


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
    run_state=None,
    dry_run=False,
    trigger=None,
    manual=None,
):
    """The report as data. ``results``: stage name -> published stage result.

    ``dry_run``: the results of a run in check mode (``--check``): the report says so in its title and
    first fact, and records nothing as rolled back.

    ``host_spans`` (stage -> host -> {started, ended}, from the stage's events) makes the timeline
    precise per host; ``signoff``, ``rca`` and ``notifications`` are the run's records of them;
    ``run_state`` the run's lifecycle (``label``, ``next``: its next commands with real paths,
    ``plan``: the plan file), from ``report.build_for_run``. ``trigger``: the event that started the run
    (docs/eda.md), whose webhook arrival time the timeline measures from. ``manual``: the run's manual step records
    (step id -> status, by, at, note): each manual step is in the timeline beside the stages, with who
    confirmed it; one that failed or was not confirmed is a gap; a blocking one nobody confirmed yet
    makes the run "waiting for operator".
    """
    run_state = run_state or {}
    plan = plan or {}
    results = results or {}
    manual = manual or {}
    state = _stages.exit_state(results, aborted=aborted)
    waiting = None if aborted or dry_run else _manual.waiting(plan, results, manual)
    manual_gaps = _manual.gaps(plan, manual) if not dry_run else []
    if waiting is not None:
        state = _stages.WAITING
    elif state == _stages.COMPLETED and manual_gaps:
        state = _stages.PARTIAL
    rows = with_manual_rows(timeline(results, host_spans), plan, manual, waiting)
    by_stage = {row["stage"]: row for row in rows}
    steps = []
    for entry in _stages.STAGES:
        name = entry["name"]
        res = results.get(name)
        if res is None:
            steps.append(
                {
                    "stage": name,
                    "title": entry["title"],
                    "status": NOT_RUN,
                    "summary": "not reached",
                    "done": "not reached",
                    "duration_s": None,
                }
            )
            continue
        steps.append(
            {
                "stage": name,
                "title": entry["title"],
                "status": res.get("status"),
                "summary": res.get("summary"),
                "done": dry_account(name, res, plan) if dry_run else account(name, res, plan),
                "started": res.get("started"),
                "ended": res.get("ended"),
                # A stage that did not run took no time: no duration, rather than a rounding artefact.
                "duration_s": None if res.get("status") == _stages.SKIPPED else by_stage[name]["duration_s"],
                "changed": bool(res.get("changed")),
                "hosts": {
                    h: {"status": r.get("status"), "msg": r.get("msg")} for h, r in (res.get("hosts") or {}).items()
                },
            }
        )
        if res.get("attempts"):
            # Earlier attempts of the stage (a resume after a halt or an interrupted driver), oldest first.
            steps[-1]["attempts"] = [
                {k: a.get(k) for k in ("status", "summary", "started", "ended")} for a in res["attempts"]
            ]
    lims = limitations(results) if state not in (_stages.COMPLETED, _stages.WAITING) else []
    if state == _stages.WAITING:
        lims.append(
            "waiting for operator: manual step %s (%s, owner %s) must be done and confirmed before the run goes on"
            % (waiting["id"], waiting["title"], waiting["owner"])
        )
    else:
        lims += manual_gaps
    lims += list(extra_limitations or [])
    if aborted:
        lims.insert(0, "aborted: %s" % (abort_reason or "cancelled by the operator"))
    code = results.get("code_config") or {}
    rep = {
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
        # A host whose state was not read back is "unknown", never None.
        "host_releases": {h: r.get("release") or "unknown" for h, r in (code.get("hosts") or {}).items()},
        # Hosts left out of the plan (--limit/--exclude), and why: not rolled back, not validated.
        "excluded": dict(plan.get("excluded") or {}),
        "run_state": run_state.get("label"),
        "hosts": host_lines(plan, results),
        "checks": (results.get("validate") or {}).get("checks"),
        "flags": (results.get("feature_flags") or {}).get("flags"),
        "database": (results.get("database") or {}).get("database") or _planned_database(plan, results),
        "infrastructure": (results.get("infrastructure") or {}).get("infrastructure"),
        "validation": (results.get("validate") or {}).get("hosts"),
        "window": _window(plan.get("window"), results),
        "known_limitations": lims,
        "next_steps": _next_steps(state, results, run_state.get("next"), run_state.get("plan")),
        "release_record": dict(
            {
                "version": plan.get("from_version"),
                "status": "rolled back" if code.get("status") == _stages.OK else "not rolled back",
                "known_bad": code.get("status") == _stages.OK,
                "previous_known_good": plan.get("to_version"),
            },
            # The environment the manifest names (the release record is kept per application and environment).
            **({"environment": plan["environment"]} if plan.get("environment") else {}),
        ),
        "timeline": rows,
        # The plan's label (plan, runbook plan, emergency plan), each layer's approach and the manual steps.
        "plan_label": plan.get("label") or "plan",
        "layers": dict(plan.get("layers") or {}),
        "manual_steps": manual_step_lines(plan, manual, waiting),
        "waiting_for": waiting,
        "document_for_future": plan.get("document_for_future"),
        "time_to_restore": time_to_restore(approval, [r for r in rows if not r.get("manual")]),
        "trigger": trigger or None,
        "from_webhook": from_webhook(trigger, [r for r in rows if not r.get("manual")]),
        "signoff": signoff or None,
        "signoff_status": signoff_status(signoff, state),
        "rca": rca or {"status": "not configured"},
        "notifications": list(notifications or []),
    }
    if dry_run:
        rep["dry_run"] = True
        rep["release_record"].update(status="not rolled back (dry run)", known_bad=False)
        rep["rca"] = {"status": "not opened (dry run)"}
        # What a completed run calls for (watch monitoring, the RCA) is not for a dry run.
        rest = list(rep["next_steps"] or [])[1 if state == _stages.COMPLETED else 0 :]
        rep["next_steps"] = [
            "This was a dry run (--check): nothing was changed. To roll back for real, approve and run the plan."
        ] + rest
    rep["digest"] = ["%s: %s" % (s["stage"], s["done"]) for s in steps if s["status"] not in (NOT_RUN,)]
    rep["sections"] = sections(rep)
    return rep


def refresh(rep, signoff=None):
    """``rep`` with a new sign-off record, its words and sections made again from the same facts."""
    rep = dict(rep)
    rep["signoff"] = signoff or None
    rep["signoff_status"] = signoff_status(signoff, rep.get("exit_state"))
    if "time_to_restore" not in rep:  # a report written before the figure existed
        rep["time_to_restore"] = time_to_restore(rep.get("approval"), rep.get("timeline"))
    rep["sections"] = sections(rep)
    return rep


# ------------------------------------------------------------------------------------ what was done
def account(name, res, plan):
    """One sentence: what stage ``name`` did, named by its objects (flags, releases, revisions, files).

    A stage that did not end ok keeps the stage's own summary (which names the hosts and the cause),
    with what it still did in front of it.
    """
    status = res.get("status")
    summary = str(res.get("summary") or status)
    if status in (_stages.SKIPPED, _stages.BLOCKED) or name == "assess":
        return summary
    done = _ACCOUNTS.get(name, lambda res, plan: None)(res, plan)
    if status == _stages.OK:
        return done or summary
    return "%s; %s" % (summary, done) if done else summary


def dry_account(name, res, plan):
    """One sentence for a stage of a dry run (check mode): what it would do; nothing was done."""
    summary = str(res.get("summary") or res.get("status"))
    if res.get("status") != _stages.OK or name == "assess":
        return summary
    would = None
    if name == "feature_flags":
        flags = res.get("flags") or {}
        names = sorted(n for n, st in flags.items() if st.get("would_change"))
        would = "would turn off %s" % ", ".join(names) if names else "every flag is already off"
    elif name == "code_config":
        moves = {}
        for host, entry in sorted(((plan or {}).get("hosts") or {}).items()):
            if host in (res.get("hosts") or {}):
                moves.setdefault("%s -> %s" % (entry.get("live"), entry.get("target")), []).append(host)
        would = "; ".join("would switch %s: %s" % (", ".join(h), m) for m, h in sorted(moves.items())) or None
    elif name == "database":
        db = res.get("database") or {}
        steps = db.get("steps") or []
        if steps:
            would = "would back up, then run %d down step(s) with %s: %s -> %s" % (
                len(steps),
                db.get("tool"),
                db.get("from_revision") or db.get("current"),
                db.get("to_revision"),
            )
        elif db:
            would = "would change nothing: %s is at %s" % (db.get("tool"), db.get("current"))
    elif name == "infrastructure":
        infra = res.get("infrastructure") or {}
        if infra.get("path"):
            would = "would restore %s%s" % (
                infra["path"],
                " from %s" % infra["snapshot"] if infra.get("snapshot") else "",
            )
    elif name == "validate":
        would = "not validated: nothing was rolled back (what the hosts answer now is in Validation)"
    elif name == "report":
        would = "this dry run's report (dry-run/ in the run directory)"
    return "dry run: %s" % (would or summary)


def _flags_done(res, plan):
    flags = res.get("flags") or {}
    if not flags:
        return None
    off = sorted(n for n, st in flags.items() if not st.get("left_on"))
    left = sorted(n for n, st in flags.items() if st.get("left_on"))
    parts = []
    if off:
        backend = sorted({str(flags[n].get("backend") or "") for n in off} - {""})
        parts.append("turned off %s%s" % (", ".join(off), " (%s)" % ", ".join(backend) if backend else ""))
    if left:
        parts.append("left on %s" % ", ".join(left))
    return "; ".join(parts)


def _code_done(res, plan):
    moves = {}
    for line in host_lines(plan, {"code_config": res}):
        if line["status"] == _stages.OK:
            move = "%s -> %s" % (line["from"], line["release"]) if line["from"] else "now on %s" % line["release"]
            moves.setdefault(move, []).append(line["host"])
    if not moves:
        return None
    return "; ".join("%s: %s" % (", ".join(hosts), move) for move, hosts in sorted(moves.items()))


def _database_done(res, plan):
    db = res.get("database") or {}
    if not db:
        return None
    applied = db.get("applied") or []
    text = "%s %s -> %s" % (db.get("tool"), db.get("from_revision"), db.get("current"))
    if not applied and db.get("from_revision") == db.get("current"):
        text = "%s stayed at %s" % (db.get("tool"), db.get("current"))
    backups = database_backups(db)
    if backups:
        text += ", backup %s" % backups[0].get("path")
    return text


def _infrastructure_done(res, plan):
    inf = res.get("infrastructure") or {}
    if not inf:
        return None
    kind = inf.get("kind") or "config_file"
    if kind == "terraform":
        return "terraform plan of %s %s" % (inf.get("path"), "applied" if inf.get("restored") else "not applied")
    if kind == "tasks":
        return "revert tasks %s %s" % (inf.get("path"), "ran" if inf.get("restored") else "did not finish")
    if inf.get("restored"):
        return "%s restored from %s" % (inf.get("path"), inf.get("snapshot"))
    return "%s not restored" % inf.get("path")


def _validate_done(res, plan):
    hosts = res.get("hosts") or {}
    healthy = sorted(h for h, r in hosts.items() if r.get("status") == _stages.OK)
    checks = res.get("checks") or []
    parts = []
    if healthy:
        versions = sorted({str(r.get("version")) for h, r in hosts.items() if h in healthy and r.get("version")})
        parts.append("%s healthy%s" % (", ".join(healthy), " on %s" % ", ".join(versions) if versions else ""))
    if checks:
        passed = sum(1 for c in checks if c.get("ok"))
        parts.append("%d of %d check(s) passed" % (passed, len(checks)))
    return "; ".join(parts) or None


def _report_done(res, plan):
    return "report.md, report.json and report.html written"


_ACCOUNTS = {
    "feature_flags": _flags_done,
    "code_config": _code_done,
    "database": _database_done,
    "infrastructure": _infrastructure_done,
    "validate": _validate_done,
    "report": _report_done,
}


def host_lines(plan, results):
    """One line per application host: the release it ran, the one it was to run, and what was read back."""
    planned = (plan or {}).get("hosts") or {}
    code = ((results or {}).get("code_config") or {}).get("hosts") or {}
    checked = ((results or {}).get("validate") or {}).get("hosts") or {}
    out = []
    for host in sorted(set(planned) | set(code)):
        info = planned.get(host) or {}
        res = code.get(host) or {}
        val = checked.get(host) or {}
        out.append(
            {
                "host": host,
                "from": info.get("live"),
                "to": info.get("target") or (plan or {}).get("to_version"),
                "release": res.get("release") or ("%s (unknown)" % info.get("live") if res else info.get("live")),
                "status": res.get("status") or NOT_RUN,
                "msg": res.get("msg") or "",
                # Read back by validation when it ran, else by the code stage's own verification.
                "health": _text(val.get("health") or res.get("health") or "") or None,
                "version": val.get("version") or res.get("version"),
                "validation": val.get("msg"),
            }
        )
    for host, why in sorted(((plan or {}).get("excluded") or {}).items()):
        out.append(
            {
                "host": host,
                "from": None,
                "to": None,
                "release": "left out of this rollback (%s)" % why,
                "status": "left out",
                "msg": why,
                "health": None,
                "version": None,
                "validation": None,
            }
        )
    return out


def database_backups(db):
    """The database stage's backups, first (the one a restore starts from) first."""
    backups = [b for b in (db.get("backups") or []) if isinstance(b, dict)]
    if db.get("backup") and db["backup"] not in backups:
        backups.insert(0, db["backup"])
    return backups


def limitations(results):
    """Known limitations: one line per stage that did not end ok.

    A stage that failed carries its rule (what the procedure does about it); a stage that was not
    reached says why, and no rule: nothing of it ran.
    """
    out = []
    for name in _stages.EXECUTION_STAGES:
        res = (results or {}).get(name)
        if res is None:
            out.append("%s: not run" % name)
            continue
        status = res.get("status")
        if status == _stages.OK or (status == _stages.SKIPPED and res.get("reached") is not False):
            continue
        summary = res.get("summary") or status
        if status == _stages.SKIPPED:
            out.append("%s: %s" % (name, summary))
        else:
            out.append("%s: %s. %s" % (name, summary, _stages.stage(name)["rule"]))
    return out


# ------------------------------------------------------------------------------------------ time
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


def time_to_restore(approval, rows):
    """Seconds from the approval to the first host restored, to every host restored, and to validated.

    A host counts as restored when the code stage's work on it ended ``ok`` (switched, restarted and
    answering on the target). Each figure is ``None``, with a ``why``, when it was never reached.
    """
    approved = parse_time((approval or {}).get("time"))
    by_stage = {row["stage"]: row for row in rows or []}
    code = by_stage.get("code_config") or {}
    hosts = code.get("hosts") or []
    restored = sorted(t for t in (parse_time(h.get("ended")) for h in hosts if h.get("status") == _stages.OK) if t)
    validate = by_stage.get("validate") or {}

    def mark(moment, why):
        if approved is None:
            return {"at": _iso(moment), "seconds": None, "why": "no approval time"}
        if moment is None:
            return {"at": None, "seconds": None, "why": why}
        return {"at": _iso(moment), "seconds": round(max(0.0, (moment - approved).total_seconds()), 1), "why": None}

    if code.get("status") in (None, NOT_RUN, _stages.SKIPPED) or not hosts:
        first = every = mark(None, "no host was rolled back")
    else:
        first = mark(restored[0] if restored else None, "no host was restored")
        every = mark(restored[-1] if len(restored) == len(hosts) else None, "not every host was restored")
    validated = mark(
        parse_time(validate.get("ended")) if validate.get("status") == _stages.OK else None,
        "validation did not pass" if validate.get("status") not in (None, NOT_RUN) else "validation did not run",
    )
    return {
        "approved": _iso(approved),
        "first_host_restored": first,
        "all_hosts_restored": every,
        "validated": validated,
    }


def from_webhook(trigger, rows):
    """Seconds from the triggering webhook's arrival to the flags off, every host restored and validated
    (``None`` without a trigger). Each mark is ``{"at", "seconds", "why"}`` like ``time_to_restore``'s."""
    received = parse_time((trigger or {}).get("received_at"))
    if received is None:
        return None
    by_stage = {row["stage"]: row for row in rows or []}

    def mark(row, why):
        if not row or row.get("status") != _stages.OK:
            return {"at": None, "seconds": None, "why": why}
        if row is code and hosts:
            ends = [parse_time(h.get("ended")) if h.get("status") == _stages.OK else None for h in hosts]
            if any(t is None for t in ends):
                return {"at": None, "seconds": None, "why": why}
            moment = max(ends)
        else:
            moment = parse_time(row.get("ended"))
        if moment is None:
            return {"at": None, "seconds": None, "why": why}
        return {"at": _iso(moment), "seconds": round(max(0.0, (moment - received).total_seconds()), 1), "why": None}

    code = by_stage.get("code_config")
    hosts = (code or {}).get("hosts") or []
    return {
        "received": _iso(received),
        "kind": (trigger or {}).get("kind"),
        "flags_off": mark(by_stage.get("feature_flags"), "the flags were not turned off"),
        "all_hosts_restored": mark(code, "not every host was restored"),
        "validated": mark(by_stage.get("validate"), "validation did not pass"),
    }


def from_webhook_line(marks):
    """One sentence: the times from the triggering webhook's arrival."""
    if not marks:
        return None
    parts = []
    for key, label in (
        ("flags_off", "flags off"),
        ("all_hosts_restored", "every host restored"),
        ("validated", "validated"),
    ):
        mark = marks.get(key) or {}
        parts.append(
            "%s %.1f s" % (label, mark["seconds"])
            if mark.get("seconds") is not None
            else "%s: %s" % (label, mark.get("why"))
        )
    return "From the %s webhook received at %s: %s." % (
        marks.get("kind") or "trigger",
        marks["received"],
        ", ".join(parts),
    )


def time_to_restore_line(ttr):
    """One sentence: time to restore, from the approval."""
    if not ttr or not ttr.get("approved"):
        return "Time to restore: no approval recorded."
    parts = []
    for key, label in (
        ("first_host_restored", "first host restored"),
        ("all_hosts_restored", "every host restored"),
        ("validated", "validated"),
    ):
        mark = ttr.get(key) or {}
        parts.append(
            "%s %.1f s" % (label, mark["seconds"])
            if mark.get("seconds") is not None
            else "%s: %s" % (label, mark.get("why"))
        )
    return "Time to restore from the approval at %s: %s." % (ttr["approved"], ", ".join(parts))


def signoff_status(signoff, exit_state=None):
    """One line: who signed the rollback off and when, that it awaits sign-off, or that a run which ended
    ``exit_state`` (aborted, blocked) is never signed off (``signoff`` is for completed and partially completed
    rollbacks)."""
    if signoff:
        return "signed off by %s at %s" % (signoff.get("by"), signoff.get("time"))
    if exit_state in (None, _stages.COMPLETED, _stages.PARTIAL):
        return "awaiting sign-off"
    return "none: a run that ended %s is not signed off" % exit_state


def rca_line(rca):
    """One line about the root-cause analysis ticket."""
    rca = rca or {}
    status = rca.get("status")
    if status == "filed":
        return "RCA ticket %s filed in %s: %s" % (rca.get("key"), rca.get("tracker"), rca.get("url"))
    if status == "pending":
        return "RCA pending (%s): retry with `release-rollback rca RUN_DIR`" % (rca.get("error") or "not filed yet")
    return "no tracker configured: open the root-cause analysis by hand"


def parse_time(value):
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
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
        row = {"stage": name, "title": entry["title"], "status": NOT_RUN, "started": None, "ended": None}
        row.update({"duration_s": None, "hosts": []})
        if res is not None:
            started = parse_time(res.get("started"))
            ended = parse_time(res.get("ended"))
            stage_spans = spans.get(name) or {}
            hosts = []
            for host, hres in sorted((res.get("hosts") or {}).items()):
                span = stage_spans.get(host) or {}
                h_start = parse_time(span.get("started")) or started
                h_end = parse_time(span.get("ended")) or ended
                hosts.append(
                    {
                        "host": host,
                        "status": hres.get("status"),
                        "msg": hres.get("msg"),
                        "started": _iso(h_start),
                        "ended": _iso(h_end),
                        "duration_s": _seconds(h_start, h_end),
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
                    "duration_s": None if res.get("status") == _stages.SKIPPED else _seconds(started, ended),
                    "hosts": hosts,
                }
            )
        rows.append(row)
    return rows


def manual_step_lines(plan, manual, waiting=None):
    """Each manual step of the plan with what became of it: who confirmed it, when, and the note."""
    out = []
    for step in plan.get("manual_steps") or []:
        rec = (manual or {}).get(step["id"]) or {}
        status = rec.get("status") or ("waiting" if waiting and waiting["id"] == step["id"] else "not confirmed")
        out.append(
            {
                "id": step["id"],
                "title": step["title"],
                "stage": step["stage"],
                "position": step["position"],
                "owner": step["owner"],
                "blocking": step["blocking"],
                "source": step.get("source"),
                "status": status,
                "by": rec.get("by"),
                "at": rec.get("at"),
                "note": rec.get("note"),
                "instructions": step["instructions"],
            }
        )
    return out


def with_manual_rows(rows, plan, manual, waiting=None):
    """The timeline with a row per manual step in its place (before or after its stage), saying who
    confirmed it, when, and the note."""
    steps = plan.get("manual_steps") or []
    if not steps:
        return rows
    by_stage = {row["stage"]: row for row in rows}
    out = []
    placed = set()
    for kind, item in _manual.sequence(steps):
        if kind == "stage":
            if item in by_stage:
                out.append(by_stage[item])
                placed.add(item)
            continue
        rec = (manual or {}).get(item["id"]) or {}
        status = rec.get("status") or ("waiting" if waiting and waiting["id"] == item["id"] else NOT_RUN)
        who = "%s by %s" % (status, rec["by"]) if rec.get("by") else status
        out.append(
            {
                "stage": item["stage"],
                "title": "manual: %s" % item["title"],
                "manual": item["id"],
                "status": status,
                "summary": "%s%s" % (who, ": %s" % rec["note"] if rec.get("note") else ""),
                "started": None,
                "ended": rec.get("at"),
                "duration_s": None,
                "by": rec.get("by"),
                "note": rec.get("note"),
                "owner": item["owner"],
                "hosts": [],
            }
        )
    # The stages before the first and after the last manual step, in the stage table's order.
    head = [r for r in rows if r["stage"] not in placed and _stages.STAGE_NAMES.index(r["stage"]) < 1]
    tail = [r for r in rows if r["stage"] not in placed and r not in head]
    return head + out + tail


def _seconds(start, end):
    return round(max((end - start).total_seconds(), 0.0), 2) if start and end else None


# --------------------------------------------------------------------------------------- database
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


def _next_steps(state, results, commands=None, plan_file=None):
    """What to do next: what the results call for, then the run's own next commands (real paths,
    ready to paste: ``lifecycle.next_commands``)."""
    commands = ["`%s`" % c for c in (commands or [])]
    hint = _database_hint(results.get("database") or {}, plan_file)
    if state == _stages.COMPLETED:
        return ["Watch the service's monitoring; open the root-cause analysis for the rolled-back release."] + commands
    if state == _stages.RUN_BLOCKED:
        return (hint or ["Resolve the blockers above. Nothing was changed."]) + commands
    if state == _stages.ABORTED:
        return ["Check the hosts listed above."] + commands
    if state == _stages.WAITING:
        return ["Do the manual step the run waits for (instructions above), then confirm it and resume."] + commands
    out = list(hint)
    for name in _stages.EXECUTION_STAGES:
        res = results.get(name)
        if res is None or res.get("status") not in (_stages.OK, _stages.SKIPPED):
            if res is not None and res.get("status") == _stages.STALE:
                # Resuming finds the same hosts changed again: the plan no longer describes them.
                out.append(
                    "Stage %s: the hosts named above no longer run what the plan expected: end this run with abort "
                    "and make a new plan (resume goes on only once they run it again)." % name
                )
            else:
                out.append("Stage %s: fix the cause above, then resume the run." % name)
            break
    return (out or ["Re-run validation by resuming the run after mitigation."]) + commands


def _database_hint(db, plan_file=None):
    """What to do about a database stage that refused or failed (empty when it did neither)."""
    if db.get("status") == _stages.BLOCKED and "cannot run" in str(db.get("summary")):
        return [
            "Database: the down steps named above cannot run; with a DBA, keep the schema and roll it forward "
            "with a new migration, or restore a backup taken before the release. Nothing was changed in the database."
        ]
    if db.get("status") == _stages.BLOCKED:
        return [
            "Database: review the down steps named above. If losing that data is acceptable, approve them with "
            '`release-rollback approve %s --approver "$USER" --destructive`, then resume the run; '
            "otherwise keep the schema and roll it forward with a new migration." % (plan_file or "PLAN")
        ]
    backups = database_backups(db.get("database") or {})
    if db.get("status") == _stages.FAILED and backups:
        return [
            "Database: escalate to the DBA with the revision reached and the backup %s (restore: %s)."
            % (backups[0].get("path"), backups[0].get("restore_command"))
        ]
    return []


# --------------------------------------------------------------------------------------- sections
def fact(label, *parts, **kw):
    """A fact: an optional label and text parts; a part is a string, or ``("code", text)`` for a literal.

    Keywords: ``status`` (a state word renderers may colour), ``level`` (1 = a detail of the fact above).
    """
    out = {"label": label, "parts": [], "status": kw.get("status"), "level": kw.get("level", 0)}
    for part in parts:
        if isinstance(part, tuple):
            out["parts"].append({"text": _text(part[1]), "code": True})
        else:
            out["parts"].append({"text": _text(part), "code": False})
    return out


def _text(value):
    return "" if value is None else str(value)


def section(ident, title, facts=None, table=None, items=None, chart=None):
    return {
        "id": ident,
        "title": title,
        "facts": list(facts or []),
        "table": table,
        "items": list(items or []) if items is not None else None,
        "chart": chart,
    }


def table(columns, rows, status_column=None):
    """Columns and rows of text; ``status_column`` names the column whose cells are states."""
    return {
        "columns": list(columns),
        "rows": [[_text(c) for c in row] for row in rows],
        "status_column": columns.index(status_column) if status_column else None,
    }


def sections(rep):
    """The report's facts for people, in reading order. Every renderer renders these and only these."""
    out = [_summary_section(rep)]
    out.append(
        section(
            "steps",
            "Steps",
            table=table(
                ["stage", "status", "started", "ended", "seconds", "what was done"],
                [
                    [s["stage"], s["status"], s.get("started"), s.get("ended"), _secs(s), s.get("done")]
                    for s in rep["steps"]
                ],
                status_column="status",
            ),
        )
    )
    if rep.get("hosts"):
        out.append(
            section(
                "hosts",
                "Hosts",
                table=table(
                    ["host", "status", "from", "to", "runs now", "health", "version read back"],
                    [
                        [
                            h["host"],
                            h["status"],
                            h["from"],
                            h["to"],
                            h["release"],
                            h.get("health") or "",
                            h.get("version") or "",
                        ]
                        for h in rep["hosts"]
                    ],
                    status_column="status",
                ),
            )
        )
    if rep.get("flags"):
        out.append(_flags_section(rep["flags"]))
    if rep.get("database"):
        out.append(section("database", "Database", facts=database_facts(rep["database"])))
    if rep.get("infrastructure"):
        out.append(section("infrastructure", "Infrastructure", facts=infrastructure_facts(rep["infrastructure"])))
    if rep.get("validation"):
        out.append(
            section(
                "validation",
                "Validation",
                table=table(
                    ["host", "status", "detail"],
                    [[h, r.get("status"), r.get("msg")] for h, r in sorted(rep["validation"].items())],
                    status_column="status",
                ),
            )
        )
    if rep.get("checks"):
        out.append(
            section(
                "checks",
                "Validation checks",
                table=table(
                    ["check", "kind", "value", "threshold", "result", "time"],
                    [
                        [
                            c.get("name"),
                            c.get("kind"),
                            c.get("value"),
                            c.get("threshold"),
                            "pass" if c.get("ok") else "FAIL: %s" % _text(c.get("msg")),
                            c.get("time"),
                        ]
                        for c in rep["checks"]
                    ],
                ),
            )
        )
    if rep.get("manual_steps"):
        out.append(_manual_section(rep["manual_steps"]))
    earlier = attempt_lines(rep)
    if earlier:
        out.append(section("attempts", "Earlier attempts", items=earlier))
    out.append(_timeline_section(rep.get("timeline") or [], rep.get("time_to_restore"), rep.get("from_webhook")))
    failures = what_failed(rep.get("timeline") or [])
    if failures:
        out.append(section("failed", "What failed", items=failures))
    out.append(section("limitations", "Known limitations", items=rep.get("known_limitations") or ["none"]))
    out.append(section("next", "Next steps", items=rep.get("next_steps") or []))
    if rep.get("notifications"):
        out.append(
            section(
                "notifications",
                "Notifications",
                table=table(
                    ["time", "event", "channel", "outcome"],
                    [[n.get("time"), n.get("event"), n.get("channel"), n.get("outcome")] for n in rep["notifications"]],
                ),
            )
        )
    return out


def attempt_lines(rep):
    """One line per earlier attempt of a stage: what it did before a halt or an interruption."""
    out = []
    for step in rep.get("steps") or []:
        attempts = step.get("attempts") or []
        for i, att in enumerate(attempts, 1):
            out.append(
                "%s, attempt %d of %d (started %s): %s - %s"
                % (step["stage"], i, len(attempts) + 1, att.get("started"), att.get("status"), att.get("summary"))
            )
    return out


def _manual_section(steps):
    """Who did which manual step, when, and what they noted."""
    return section(
        "manual",
        "Manual steps",
        table=table(
            ["step", "where", "owner", "status", "confirmed by", "at", "note", "from"],
            [
                [
                    "%s (%s)" % (m["id"], m["title"]),
                    "%s %s" % (m["position"], m["stage"]),
                    m["owner"] + ("" if m["blocking"] else " (not blocking)"),
                    m["status"],
                    m.get("by") or "",
                    m.get("at") or "",
                    m.get("note") or "",
                    m.get("source") or "",
                ]
                for m in steps
            ],
            status_column="status",
        ),
    )


def _summary_section(rep):
    appr = rep.get("approval") or {}
    facts = []
    if rep.get("dry_run"):
        facts.append(
            fact(
                "DRY RUN",
                "check mode (--check): nothing was changed; the release is not rolled back. A real run of this "
                "plan would end %s." % rep["exit_state"],
                status="dry run",
            )
        )
    facts += [
        fact(
            "Exit state" if not rep.get("dry_run") else "Exit state of the dry run",
            "%s (exit code %s)" % (rep["exit_state"], rep["exit_code"]),
            status=rep["exit_state"],
        ),
        fact("Run", "%s%s" % (rep.get("run_id"), " (%s)" % rep["run_state"] if rep.get("run_state") else "")),
        fact("Reason", rep.get("reason")),
        fact("Scope", ", ".join(rep.get("scope") or [])),
        fact("Plan hash", ("code", rep.get("plan_hash"))),
    ]
    if rep.get("plan_label") and rep["plan_label"] != "plan":
        facts.append(fact("Plan", rep["plan_label"], status=rep["plan_label"]))
    if rep.get("layers"):
        facts.append(fact("Approach", ", ".join("%s: %s" % kv for kv in rep["layers"].items())))
    if rep.get("waiting_for"):
        w = rep["waiting_for"]
        facts.append(
            fact(
                "Waiting for operator",
                "manual step %s (%s, owner %s): %s" % (w["id"], w["title"], w["owner"], w["instructions"]),
                status=_stages.WAITING,
            )
        )
    if rep.get("document_for_future"):
        facts.append(fact("Document for future", rep["document_for_future"]))
    if appr:
        facts.append(
            fact(
                "Approved by",
                "%s at %s%s"
                % (appr.get("approver"), appr.get("time"), (" (%s)" % appr["reason"]) if appr.get("reason") else ""),
            )
        )
        if appr.get("break_glass"):
            facts.append(fact("BREAK-GLASS self-approval", appr["break_glass"]))
        if appr.get("policy"):
            pol = appr["policy"]
            facts.append(
                fact(
                    "Standard change",
                    "pre-approved by policy %s (%s, sha256 %s); no person approved this run; triggered by %s"
                    % (pol.get("name"), pol.get("path"), pol.get("sha256"), (appr.get("trigger") or {}).get("summary")),
                )
            )
    else:
        facts.append(fact("Approved by", "nobody"))
    window = rep.get("window")
    if window:
        facts.append(
            fact(
                "Change window",
                "%s - %s%s"
                % (
                    window.get("start"),
                    window.get("end"),
                    " (ended outside it)" if window.get("ended_outside") else "",
                ),
            )
        )
    rec = rep.get("release_record") or {}
    facts.append(
        fact(
            "Release record",
            "%s %s%s%s; previous known-good release %s"
            % (
                rec.get("version"),
                rec.get("status"),
                " (known-bad)" if rec.get("known_bad") else "",
                " in %s" % rec["environment"] if rec.get("environment") else "",
                rec.get("previous_known_good"),
            ),
        )
    )
    facts.append(
        fact(
            "Sign-off",
            rep.get("signoff_status") or signoff_status(None, rep.get("exit_state")),
            status="signed" if rep.get("signoff") else "awaiting",
        )
    )
    facts.append(fact("RCA", rca_line(rep.get("rca"))))
    facts.append(fact("Generated", rep.get("generated")))
    title = "Rollback report: %s %s -> %s" % (rep.get("app"), rep.get("from_version"), rep.get("to_version"))
    if rep.get("dry_run"):
        title = "DRY RUN, nothing changed: " + title
    return section("summary", title, facts=facts)


def _flags_section(flags):
    rows = []
    for name, st in sorted(flags.items()):
        note = "LEFT ON: %s" % st.get("error", "not turned off") if st.get("left_on") else ""
        rows.append(
            [
                name,
                st.get("backend") or "",
                flag_word(st.get("before")),
                flag_word(st.get("after")),
                st.get("time") or "",
                note,
            ]
        )
    return section(
        "flags",
        "Feature flags",
        table=table(["flag", "backend", "before", "after", "turned off at", "note"], rows),
    )


def database_facts(db):
    """The database stage's facts: revisions, steps, failure, backups with their restore commands, checks.

    Each kind of fact is one function in ``_DATABASE_FACTS``: a new field of the stage's result
    (a restore point, more backups) is one more function there.
    """
    out = []
    for facts_of in _DATABASE_FACTS:
        out += facts_of(db)
    return out


def _db_revisions(db):
    return [
        fact(
            None,
            "%s: from revision %s to %s (now %s)"
            % (db.get("tool"), db.get("from_revision"), db.get("to_revision"), db.get("current")),
        )
    ]


def _db_steps(db):
    out = []
    for step in db.get("steps") or []:
        kind = (
            "irreversible" if step.get("irreversible") else "destructive" if step.get("destructive") else "reversible"
        )
        done = "applied" if "%s -> %s" % (step.get("revision"), step.get("to")) in (db.get("applied") or []) else ""
        out.append(
            fact(
                None,
                "down step %s -> %s: %s%s%s"
                % (
                    step.get("revision"),
                    step.get("to"),
                    kind,
                    " (%s)" % "; ".join(step["reasons"]) if step.get("reasons") else "",
                    ", " + done if done else "",
                ),
            )
        )
    return out


def _db_failure(db):
    out = []
    if db.get("failed_step"):
        out.append(
            fact(
                None,
                "failed at step %s; the database is at revision %s%s"
                % (db["failed_step"], db.get("current"), " (marked dirty)" if db.get("dirty") else ""),
                status="failed",
            )
        )
    half = db.get("half_applied")
    if half:
        out.append(
            fact(
                None,
                "half-applied at revision %s (its DDL is not transactional): %s%s"
                % (
                    half.get("revision"),
                    "; ".join(half.get("changes") or []),
                    " (since then: %s)" % half["resolved"] if half.get("resolved") else "",
                ),
                status="failed",
            )
        )
    return out


def _db_backups(db):
    out = []
    for i, backup in enumerate(database_backups(db)):
        details = ", ".join(
            x
            for x in (
                backup.get("tool"),
                "%s bytes" % backup["size"] if backup.get("size") is not None else None,
                "of revision %s" % backup["revision"] if backup.get("revision") else None,
            )
            if x
        )
        # The first is the run's restore point (taken before anything changed); later ones are retries'.
        name = "restore point" if i == 0 and db.get("restore_point") else "backup" if i == 0 else "backup %d" % (i + 1)
        out.append(fact(None, "%s%s: " % (name, " (%s)" % details if details else ""), ("code", backup.get("path"))))
        out.append(fact(None, "%s checksum: " % name, ("code", backup.get("sha256"))))
        if "verified" in backup:
            verdict = (
                ("yes (%s)" % backup["verified_by"] if backup.get("verified_by") else "yes")
                if backup.get("verified")
                else "NO"
            )
            out.append(fact(None, "%s verified: %s" % (name, verdict)))
        out.append(fact(None, "restore: ", ("code", backup.get("restore_command"))))
    point = db.get("restore_point")
    if isinstance(point, dict) and point.get("path") not in [b.get("path") for b in database_backups(db)]:
        out.append(fact(None, "restore point (revision %s): " % point.get("revision"), ("code", point.get("path"))))
        out.append(fact(None, "restore point checksum: ", ("code", point.get("sha256"))))
        out.append(fact(None, "restore: ", ("code", point.get("restore_command"))))
    return out


def _db_integrity(db):
    return [
        fact(
            None,
            "integrity: %s: %s (%s)" % (check.get("check"), "ok" if check.get("ok") else "FAILED", check.get("detail")),
            status="ok" if check.get("ok") else "failed",
        )
        for check in db.get("integrity") or []
    ]


_DATABASE_FACTS = (_db_revisions, _db_steps, _db_failure, _db_backups, _db_integrity)


def infrastructure_facts(inf):
    kind = inf.get("kind") or "config_file"
    out = []
    if kind == "terraform":
        summary = inf.get("plan_summary") or {}
        out.append(
            fact(
                None,
                "%s plan of %s: %s to add, %s to change, %s to destroy; %s"
                % (
                    "terraform" if not inf.get("version") else "terraform/tofu %s" % inf["version"],
                    inf.get("path"),
                    summary.get("add", 0),
                    summary.get("change", 0),
                    summary.get("destroy", 0),
                    "applied" if inf.get("restored") else "not applied",
                ),
                status="ok" if inf.get("restored") else "failed",
            )
        )
        for res in summary.get("resources") or []:
            out.append(fact(None, ("code", res.get("address")), ": %s" % ", ".join(res.get("actions") or []), level=1))
    elif kind == "tasks":
        out.append(
            fact(
                None,
                "revert tasks %s %s" % (inf.get("path"), "ran" if inf.get("restored") else "did not finish"),
                status="ok" if inf.get("restored") else "failed",
            )
        )
    elif inf.get("restored"):
        out.append(fact(None, "%s restored from %s" % (inf.get("path"), inf.get("snapshot")), status="ok"))
    else:
        out.append(fact(None, "%s not restored" % inf.get("path"), status="failed"))
    if inf.get("kept"):
        out.append(fact(None, "the rolled-back file is kept as %s" % inf["kept"]))
    validation = inf.get("validation") or {}
    if validation.get("mode") and validation["mode"] != "none":
        out.append(
            fact(
                None,
                "validated %s before it was applied: %s"
                % (validation["mode"].replace("_", " "), "passed" if validation.get("rc") == 0 else "failed"),
            )
        )
    verified = inf.get("verified") or {}
    if verified.get("url"):
        out.append(
            fact(
                None,
                "verified through %s: HTTP %s after %s attempt(s)"
                % (verified["url"], verified.get("status"), verified.get("attempts")),
            )
        )
    if inf.get("error"):
        out.append(fact(None, "error: %s" % inf["error"], status="failed"))
    return out


def _timeline_section(rows, ttr=None, webhook=None):
    timed = [r for r in rows if r.get("duration_s") is not None]
    longest = max(timed, key=lambda r: r["duration_s"]) if timed else None
    flat = []
    for row in rows:
        if row.get("manual"):
            who = "manual: %s (%s)" % (row["manual"], row.get("summary"))
            flat.append([row["stage"], who, row["status"], row.get("started"), row.get("ended"), ""])
            continue
        flat.append([row["stage"], "", row["status"], row.get("started"), row.get("ended"), _secs(row)])
        for h in row.get("hosts") or []:
            flat.append(["", h["host"], h.get("status"), h.get("started"), h.get("ended"), _secs(h)])
    return section(
        "timeline",
        "Timeline",
        facts=[
            fact(None, "Most time: %s (%s s)." % (longest["stage"], _secs(longest)) if longest else "No stage ran."),
            fact(None, time_to_restore_line(ttr)),
        ]
        + ([fact(None, from_webhook_line(webhook))] if webhook else []),
        table=table(["stage", "host", "status", "started", "ended", "seconds"], flat, status_column="status"),
        chart=rows,
    )


def what_failed(rows):
    out = []
    for row in rows:
        for h in row.get("hosts") or []:
            if h.get("status") not in (_stages.OK, _stages.SKIPPED, None):
                out.append("%s on %s: %s (%s)" % (row["stage"], h["host"], h.get("status"), h.get("msg")))
        if row["status"] not in (_stages.OK, _stages.SKIPPED, NOT_RUN) and not any(
            h.get("status") not in (_stages.OK, _stages.SKIPPED) for h in row.get("hosts") or []
        ):
            out.append("%s: %s (%s)" % (row["stage"], row["status"], row.get("summary")))
    return out


def _secs(row):
    return "" if row.get("duration_s") is None else "%.1f" % row["duration_s"]


def flag_word(state):
    if not state:
        return "?"
    if state.get("off"):
        return "off"
    if "defaultVariant" in state:
        return "on (%s, default %s)" % (state.get("state"), state.get("defaultVariant"))
    return "on (%s)" % state.get("state")
