# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What follows a rollback's report: notifications and the RCA ticket, each recorded in the audit trail.

The driver and the report stage both call these, so a run behaves the same whichever way it ran.
Pure Python, standard library only.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone

from ansible_collections.release.rollback.plugins.module_utils import audit as _audit
from ansible_collections.release.rollback.plugins.module_utils import notify as _notify
from ansible_collections.release.rollback.plugins.module_utils import rca as _rca
from ansible_collections.release.rollback.plugins.module_utils import report as _report
from ansible_collections.release.rollback.plugins.module_utils import stages as _stages

RCA_FILE = "rca.json"
SIGNOFF_FILE = "signoff.json"


class SignoffError(ValueError):
    """A sign-off that cannot be recorded; one sentence with the fix."""


def announce(run_dir, notify_cfg, event, rep, secrets=None, rca=None):
    """Send ``event`` to the configured channels and audit each outcome; returns the outcomes."""
    outcomes = _notify.send(notify_cfg, event, rep, run_dir, rca=rca, secrets=secrets)
    trail = os.path.join(run_dir, "audit.jsonl")
    for out in outcomes:
        _audit.append(
            trail, "notification", about=event, channel=out["channel"], kind=out["kind"], outcome=out["outcome"]
        )
    return outcomes


def read_rca(run_dir):
    return _read(os.path.join(run_dir, RCA_FILE))


def _write_json(path, data):
    fd, tmp = tempfile.mkstemp(prefix=".record-", dir=os.path.dirname(path))
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)


def file_rca(run_dir, rca_cfg, notify_cfg, rep, secrets=None):
    """File the RCA ticket unless it already was; a tracker that is down leaves it ``pending``.

    Writes rca.json, audits ``rca.filed`` or ``rca.pending``, and announces "RCA initiated".
    """
    previous = read_rca(run_dir)
    if previous and previous.get("status") == "filed":
        return previous
    link = _notify.report_link(notify_cfg, rep.get("run_id"), run_dir)
    record = _rca.file_ticket(rca_cfg, rep, link, secrets=secrets, previous=previous)
    _write_json(os.path.join(run_dir, RCA_FILE), record)
    trail = os.path.join(run_dir, "audit.jsonl")
    if record["status"] == "filed":
        _audit.append(trail, "rca.filed", tracker=record["tracker"], key=record["key"], url=record["url"])
        announce(run_dir, notify_cfg, _notify.RCA_INITIATED, rep, secrets=secrets, rca=record)
    else:
        _audit.append(trail, "rca.pending", tracker=record["tracker"], error=record["error"])
    return record


def after_run(run_dir, manifest, rep, secrets=None):
    """Announce how the run ended, then file the RCA ticket (not for a blocked run: nothing changed).

    ``manifest`` is the parsed manifest (its ``notify`` and ``rca`` sections). Returns
    ``{"notifications": [...], "rca": record or None}``; never raises for a channel or tracker.
    """
    manifest = manifest or {}
    state = rep.get("exit_state")
    sent = announce(run_dir, manifest.get("notify"), state, rep, secrets=secrets)
    record = None
    if manifest.get("rca") and state != _notify.BLOCKED:
        record = file_rca(run_dir, manifest["rca"], manifest.get("notify"), rep, secrets=secrets)
    return {"notifications": sent, "rca": record}


def signoff(run_dir, by, role="release manager", note="", accept_gaps=False, now=None):
    """Record that the Release Manager or DevOps Lead confirms the rollback complete.

    Reads the exit state from the run's report.json; writes signoff.json, audits ``signoff.recorded``
    and rewrites the report with it. Raises SignoffError when it cannot be signed off.
    """
    rep_path = os.path.join(run_dir, "report.json")
    try:
        with open(rep_path, encoding="utf-8") as fh:
            rep = json.load(fh)
    except (OSError, ValueError):
        raise SignoffError("%s has no readable report.json: write the report first" % run_dir) from None
    done = _read(os.path.join(run_dir, SIGNOFF_FILE))
    if done:
        raise SignoffError("this rollback was already signed off by %s at %s" % (done.get("by"), done.get("time")))
    by = (by or "").strip()
    if not by:
        raise SignoffError("the sign-off must name who signs off")
    state = rep.get("exit_state")
    if state not in (_stages.COMPLETED, _stages.PARTIAL):
        raise SignoffError(
            "a rollback that ended %s cannot be signed off: finish it (`release-rollback resume RUN_DIR`) first"
            % (state or "not yet")
        )
    if state == _stages.PARTIAL and not accept_gaps:
        raise SignoffError(
            "this rollback is only partially completed: resume it, or sign off accepting the known "
            "limitations in the report (--accept-gaps)"
        )
    record = {
        "by": by,
        "role": role or "release manager",
        "time": now or datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "note": note or "",
        "exit_state": state,
        "accepted_gaps": bool(accept_gaps and state == _stages.PARTIAL),
        "plan_hash": rep.get("plan_hash"),
    }
    _write_json(os.path.join(run_dir, SIGNOFF_FILE), record)
    _audit.append(os.path.join(run_dir, "audit.jsonl"), "signoff.recorded", **record)
    _report.write(run_dir, _report.refresh(rep, record))
    return record


def _read(path):
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None
