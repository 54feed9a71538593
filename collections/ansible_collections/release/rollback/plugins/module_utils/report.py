# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A run's report: built from the run directory, written into it as report.json, .md and .html.

The model is ``report_model`` (every fact, decided once), the renderers are ``report_render`` and
the release record is ``report_record``; this module reads a run directory and writes the
rendered files, for the ``rollback_report`` module and the driver alike. Pure Python, standard
library only.
"""

from __future__ import annotations

import json
import os
import tempfile

from ansible_collections.release.rollback.plugins.module_utils import lifecycle as _lifecycle
from ansible_collections.release.rollback.plugins.module_utils import report_model as _model
from ansible_collections.release.rollback.plugins.module_utils import report_record as _record
from ansible_collections.release.rollback.plugins.module_utils import report_render as _render
from ansible_collections.release.rollback.plugins.module_utils import stages as _stages

# The names callers use, from the one place each lives.
build = _model.build
refresh = _model.refresh
host_spans = _model.host_spans
signoff_status = _model.signoff_status
rca_line = _model.rca_line
render_markdown = _render.render_markdown
render_html = _render.render_html
render_text = _render.render_text
RENDERERS = {k: v for k, v in _render.RENDERERS.items() if k in ("md", "html", "json")}
known_bad = _record.known_bad
record_release = _record.record_release

FILES = ("json", "md", "html")


def _write(path, text):
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".report-", dir=directory)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def write(run_dir, rep):
    """Write report.json, report.md and report.html into ``run_dir``; returns their paths."""
    os.makedirs(run_dir, exist_ok=True)
    paths = {name: os.path.join(run_dir, "report." + name) for name in FILES}
    for name in FILES:
        _write(paths[name], RENDERERS[name](rep))
    return paths


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
            spans[entry["name"]] = _model.host_spans(_record.json_lines(fh))
    return spans


DRY_RUN_DIR = "dry-run"


def dry_run_dir(run_dir):
    """Where a dry run's report goes: never where the run's real report is."""
    return os.path.join(run_dir, DRY_RUN_DIR)


def write_dry_run_report(run_dir, plan, approval, results, aborted=False, abort_reason=None):
    """A dry run's report (``--check``): ``<run_dir>/dry-run/report.{json,md,html}``, titled as a dry run,
    for the rollback_report module and the driver alike. The run's id, state and next commands are
    ``run_dir``'s; the stages' timing comes from the dry run's own events (``dry-run/events``, the driver's).

    Records no release, appends nothing to the audit trail, notifies nobody and opens no RCA ticket.
    Returns ``(report, paths)``.
    """
    dry = dry_run_dir(run_dir)
    rep = build_for_run(
        dry, plan, approval, with_report_done(results), aborted, abort_reason, dry_run=True, run_of=run_dir
    )
    return rep, write(dry, rep)


def build_for_run(run_dir, plan, approval, results, aborted=False, abort_reason=None, dry_run=False, run_of=None):
    """``build`` with everything the run directory holds: host spans, sign-off, RCA, notifications,
    and the run's lifecycle state with its next commands. ``run_of``: the run directory whose plan a
    dry run's directory (``run_dir``) ran; its id, state and next commands are the report's."""
    owner = run_of or run_dir
    return _model.build(
        plan,
        approval,
        results,
        run_id=os.path.basename(os.path.normpath(owner)),
        aborted=aborted,
        abort_reason=abort_reason,
        host_spans=load_host_spans(run_dir),
        run_state=_run_state(owner),
        dry_run=dry_run,
        **(read_extras(run_dir) if not dry_run else {}),
    )


def _run_state(run_dir):
    """The run's lifecycle state (state.json) with its next commands, for the report."""
    state = _read_json(os.path.join(run_dir, "state.json")) or {}
    life = state.get("lifecycle") or {}
    name = life.get("state")
    if name not in [s["name"] for s in _lifecycle.STATES]:
        return None
    return {
        "label": _lifecycle.describe(name, life.get("why")),
        "plan": os.path.join(os.path.abspath(run_dir), "plan.yml"),
        "next": _lifecycle.next_commands(
            name,
            os.path.abspath(run_dir),
            pid=life.get("pid"),
            inventory=state.get("inventory"),
            manifest=state.get("manifest_file"),
            step=life.get("step"),
        ),
    }


def read_extras(run_dir):
    """The run's sign-off, RCA and notification records, as ``build`` takes them."""
    notes = []
    trail = os.path.join(run_dir, "audit.jsonl")
    if os.path.exists(trail):
        with open(trail, encoding="utf-8") as fh:
            for entry in _record.json_lines(fh):
                if isinstance(entry, dict) and entry.get("event") == "notification":
                    notes.append({k: entry.get(k) for k in ("time", "event", "channel", "outcome")})
                    notes[-1]["event"] = entry.get("about")
    return {
        "signoff": _read_json(os.path.join(run_dir, "signoff.json")),
        "rca": _read_json(os.path.join(run_dir, "rca.json")),
        "notifications": notes,
        # The event that started the run (docs/eda.md): when its webhook arrived, for the timeline.
        "trigger": _read_json(os.path.join(run_dir, "trigger.json")),
        "manual": _read_json(os.path.join(run_dir, "manual.json")) or {},
    }


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
