# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rollback procedure as data: its stages in order, their failure rules, and the exit state.

Pure Python (standard library only) so that modules, filter plugins and the driver share it.
"""

from __future__ import annotations

# Stage result statuses a stage may publish.
OK = "ok"  # the stage did its work and verified it
FAILED = "failed"  # the stage tried and could not finish
UNAVAILABLE = "unavailable"  # an external system the stage needs could not be reached
SKIPPED = "skipped"  # out of scope, not configured, or not reached
BLOCKED = "blocked"  # inputs or approval missing; nothing changed
STALE = "stale"  # the live state is no longer the plan's "from" state: left untouched (compare-and-swap)
PENDING = "pending"  # not attempted yet (a halted batch, outside a --limit): the plan still owes it
UNKNOWN = "unknown"  # the stage ended before this host reported: its state was not read back

STATUSES = (OK, FAILED, UNAVAILABLE, SKIPPED, BLOCKED, STALE, PENDING, UNKNOWN)
# Host statuses that mean "the plan still owes this host": resume works on them again.
OWED = (FAILED, UNAVAILABLE, BLOCKED, STALE, PENDING, UNKNOWN)

# Exit states of a whole run and their process exit codes.
COMPLETED = "completed"
PARTIAL = "partially completed"
RUN_BLOCKED = "blocked"
ABORTED = "aborted"
WAITING = "waiting for operator"  # a blocking manual step nobody confirmed yet: `confirm`, then `resume`

EXIT_CODES = {COMPLETED: 0, RUN_BLOCKED: 3, ABORTED: 4, PARTIAL: 5, WAITING: 6}
BAD_INPUT_EXIT = 2
UNEXPECTED_EXIT = 1

# What happens to the run when a stage does not end OK.
CONTINUE = "continue"  # go on to the next stage; the run ends partially completed
HALT = "halt"  # stop the changing stages; the report still runs; the run ends partially completed
BLOCK = "block"  # nothing was changed; the run ends blocked

# The procedure, written once. Every entry point walks this list.
STAGES = (
    {
        "name": "assess",
        "title": "Assess and plan",
        "changes_hosts": False,
        "on_failure": BLOCK,
        "rule": "No previous good release or rollback path: blocked. Find the last known-good release "
        "in the release history or tags, or start from the emergency plan template.",
    },
    {
        "name": "feature_flags",
        "title": "Disable the release's feature flags",
        "changes_hosts": True,
        "on_failure": CONTINUE,
        "rule": "Flag system unavailable: documented, the code rollback goes on (it removes the "
        "exposure too); retry this stage later with resume.",
    },
    {
        "name": "code_config",
        "title": "Roll back code and configuration",
        "changes_hosts": True,
        "on_failure": HALT,
        "rule": "Halt: no further stage changes anything. Fix the cause and resume, or escalate; "
        "hosts are listed with the release each one runs.",
    },
    {
        "name": "database",
        "title": "Roll back database migrations",
        "changes_hosts": True,
        "on_failure": CONTINUE,
        "rule": "Stop the migrations and escalate; infrastructure and validation still run and the "
        "rollback ends partially completed with the database as a known limitation.",
    },
    {
        "name": "infrastructure",
        "title": "Roll back infrastructure",
        "changes_hosts": True,
        "on_failure": CONTINUE,
        "rule": "Documented and escalated; validation still runs and the rollback ends partially completed.",
    },
    {
        "name": "validate",
        "title": "Validate health",
        "changes_hosts": False,
        "on_failure": CONTINUE,
        "rule": "Not closed until stable: the rollback ends partially completed; re-run validation "
        "after mitigation with resume.",
    },
    {
        "name": "report",
        "title": "Report, record and notify",
        "changes_hosts": False,
        "on_failure": CONTINUE,
        "rule": "Retry as soon as possible with `release-rollback report RUN_DIR`.",
    },
)

STAGE_NAMES = tuple(s["name"] for s in STAGES)
EXECUTION_STAGES = STAGE_NAMES[1:]  # what `run` executes once the plan is approved
_BY_NAME = {s["name"]: s for s in STAGES}


def stage(name):
    """Return the stage entry for ``name`` or raise ValueError naming the known stages."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError("unknown stage %r; the stages are: %s" % (name, ", ".join(STAGE_NAMES))) from None


def decide(name, status):
    """The Go/No-Go after stage ``name`` ended with ``status``.

    Returns a dict: ``go`` (run the next changing stage), ``halt`` (no further changing stage),
    ``blocked`` (the run is blocked), ``limitation`` (a gap to document, or None).
    """
    entry = stage(name)
    if status not in STATUSES:
        raise ValueError("unknown stage status %r for stage %s" % (status, name))
    if status in (OK, SKIPPED):
        return {"go": True, "halt": False, "blocked": False, "limitation": None}
    if status == PENDING:
        # Work the plan still owes (hosts never attempted): nothing after this stage may start.
        return {"go": False, "halt": True, "blocked": False, "limitation": entry["rule"]}
    if entry["on_failure"] == BLOCK or (status in (BLOCKED, STALE) and entry["on_failure"] == HALT):
        return {"go": False, "halt": True, "blocked": True, "limitation": entry["rule"]}
    # A stage whose rule is to continue (e.g. the database refusing a destructive step without the
    # approval for it) leaves its part untouched; the stages after it still run.
    if entry["on_failure"] == HALT:
        return {"go": False, "halt": True, "blocked": False, "limitation": entry["rule"]}
    return {"go": True, "halt": False, "blocked": False, "limitation": entry["rule"]}


def gate(name, results):
    """Whether stage ``name`` may run given the earlier ``results`` (stage name -> result dict).

    The report stage always runs once execution started; a changing stage runs only while no
    earlier stage halted the run. Returns ``{"run": bool, "reason": str}``.
    """
    stage(name)
    results = results or {}
    if name == "assess":
        return {"run": True, "reason": "assess always runs"}
    if name == "report":
        return {"run": True, "reason": "the report is always written"}
    for earlier in STAGE_NAMES[: STAGE_NAMES.index(name)]:
        res = results.get(earlier)
        if not res:
            if earlier == "assess":
                return {"run": False, "reason": "no plan: the assess stage has not run"}
            continue
        verdict = decide(earlier, res.get("status", FAILED))
        if verdict["blocked"]:
            return {"run": False, "reason": "the run is blocked at stage %s" % earlier}
        if verdict["halt"]:
            return {"run": False, "reason": "stage %s failed and halts the rollback" % earlier}
    return {"run": True, "reason": "earlier stages allow it"}


def exit_state(results, aborted=False):
    """The exit state of a run from its stage results (stage name -> result dict)."""
    results = results or {}
    if aborted:
        return ABORTED
    assess = results.get("assess")
    if not assess or assess.get("status") != OK:
        return RUN_BLOCKED
    for name in EXECUTION_STAGES:
        res = results.get(name)
        if res and res.get("status") in (BLOCKED, STALE) and not _anything_changed(results):
            return RUN_BLOCKED
    for name in EXECUTION_STAGES:
        res = results.get(name)
        if res is None:
            return PARTIAL  # a stage was not reached
        if res.get("status") not in (OK, SKIPPED):
            return PARTIAL
        if res.get("status") == SKIPPED and res.get("reached") is False:
            return PARTIAL
    return COMPLETED


def _anything_changed(results):
    return any((results.get(s["name"]) or {}).get("changed") for s in STAGES if s["changes_hosts"])


def limitations(results):
    """Known limitations: one line per stage that did not end OK, with its rule."""
    out = []
    for name in EXECUTION_STAGES:
        res = (results or {}).get(name)
        if res is None:
            out.append("%s: not run" % name)
            continue
        status = res.get("status")
        if status in (OK,) or (status == SKIPPED and res.get("reached") is not False):
            continue
        summary = res.get("summary") or status
        out.append("%s: %s. %s" % (name, summary, stage(name)["rule"]))
    return out


def stale_validation(results):
    """Whether the validate result predates a change: a changing stage ran (and changed something)
    after validation ended, e.g. infrastructure re-run by resume. Then validation must run again."""
    validate = (results or {}).get("validate") or {}
    ended = validate.get("ended")
    if not ended:
        return False
    for entry in STAGES:
        res = (results or {}).get(entry["name"]) or {}
        if entry["changes_hosts"] and res.get("changed") and (res.get("started") or "") > ended:
            return True
    return False


def aggregate(name, host_results, expected_hosts, unreachable=None, extra=None):
    """Build a stage result from per-host results.

    ``host_results`` maps host -> dict with at least ``status``; hosts in ``expected_hosts`` that
    published nothing count as failed (they were unreachable or the play ended for them).
    """
    stage(name)
    unreachable = set(unreachable or ())
    hosts = {}
    for host in expected_hosts:
        res = host_results.get(host)
        if not res:
            why = "unreachable" if host in unreachable else "no result (host failed before reporting)"
            res = {"status": FAILED, "msg": why}
        hosts[host] = res
    statuses = [h.get("status", FAILED) for h in hosts.values()]
    if not hosts:
        status = SKIPPED
    elif any(s == BLOCKED for s in statuses):
        status = BLOCKED
    elif any(s == STALE for s in statuses):
        status = STALE
    elif any(s in (FAILED, UNKNOWN) for s in statuses):
        status = FAILED
    elif any(s == UNAVAILABLE for s in statuses):
        status = UNAVAILABLE
    elif all(s == SKIPPED for s in statuses):
        status = SKIPPED
    elif any(s == PENDING for s in statuses):
        status = PENDING
    else:
        status = OK
    bad = sorted(h for h, r in hosts.items() if r.get("status") not in (OK, SKIPPED))
    if status == OK:
        summary = "ok on %d host(s)" % len(hosts)
    elif status == SKIPPED:
        summary = (host_results and next(iter(hosts.values())).get("msg")) or "skipped"
    else:
        summary = "%s on %s: %s" % (
            status,
            ", ".join(bad),
            "; ".join(sorted({str(hosts[h].get("msg", status)) for h in bad})),
        )
    failed_checks = [c for c in (extra or {}).get("checks") or [] if not c.get("ok")]
    if failed_checks:
        # Service-level checks (smoke, monitoring, alerts) fail the stage without blaming a host.
        why = "checks failed: " + "; ".join(
            "%s %s: %s" % (c.get("kind"), c.get("name"), c.get("msg")) for c in failed_checks
        )
        summary = why if status in (OK, SKIPPED) else summary + "; " + why
        status = FAILED if status in (OK, SKIPPED) else status
    result = {
        "stage": name,
        "status": status,
        "changed": any(bool(r.get("changed")) for r in hosts.values()),
        "summary": summary,
        "hosts": hosts,
        "reached": True,
    }
    if extra:
        result.update(extra)
    return result
