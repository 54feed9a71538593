# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Renderers of the report model: Markdown, HTML, JSON and plain text.

Each one walks the model's ``sections`` (see ``report_model``) and lays them out; none of them
decides what a fact means or leaves one out. Pure Python, standard library only.
"""

from __future__ import annotations

import html
import json

from ansible_collections.release.rollback.plugins.module_utils.report_model import parse_time


# ------------------------------------------------------------------------------------------ Markdown
def _md_parts(fact):
    return "".join("`%s`" % p["text"] if p["code"] else p["text"] for p in fact["parts"])


def _md_cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_fact(fact):
    indent = "  " * fact.get("level", 0)
    label = "**%s:** " % fact["label"] if fact.get("label") else ""
    return "%s- %s%s" % (indent, label, _md_parts(fact))


def render_markdown(rep):
    lines = []
    for i, sec in enumerate(rep["sections"]):
        lines += ["# %s" % sec["title"] if i == 0 else "## %s" % sec["title"], ""]
        lines += [_md_fact(f) for f in sec["facts"]]
        if sec["facts"] and (sec["table"] or sec["items"] is not None):
            lines.append("")
        tab = sec["table"]
        if tab:
            lines.append("| %s |" % " | ".join(tab["columns"]))
            lines.append("|" + "---|" * len(tab["columns"]))
            lines += ["| %s |" % " | ".join(_md_cell(c) for c in row) for row in tab["rows"]]
        if sec["items"] is not None:
            lines += ["- %s" % item for item in sec["items"]]
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


# ---------------------------------------------------------------------------------------------- HTML
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 8px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d8dce3;padding-bottom:4px}
table{border-collapse:collapse;width:100%;background:#fff;margin:6px 0}
th,td{border:1px solid #d8dce3;padding:4px 8px;text-align:left;
vertical-align:top}th{background:#eef0f4}code{font-size:12px;word-break:break-all}
ul.facts{list-style:none;padding:0;margin:6px 0}ul.facts li{margin:2px 0}ul.facts li.level-1{margin-left:22px}
.badge{display:inline-block;padding:2px 10px;border-radius:10px;color:#fff;font-weight:600}
.s-ok,.s-completed,.s-signed{background:#1f8a4c}.s-failed,.s-aborted{background:#c62828}.s-unavailable,
.s-partially-completed,.s-awaiting{background:#e08a00}.s-blocked{background:#6a1b9a}.s-skipped,.s-not-run{background:#8a94a6}
li.f-failed{color:#8e1c1c}
#timeline-chart{background:#fff;border:1px solid #d8dce3;padding:10px}
.tl-row{display:flex;align-items:center;height:24px}.tl-row.host{height:18px;font-size:12px;color:#4a5366}
.tl-label{width:260px;box-sizing:border-box;flex:none;overflow:hidden;white-space:nowrap;text-overflow:ellipsis}
.tl-row.host .tl-label{padding-left:18px}
.tl-track{position:relative;flex:1;height:100%;border-left:1px solid #d8dce3}
.tl-bar{position:absolute;top:4px;bottom:4px;min-width:3px;border-radius:3px}
.tl-row.host .tl-bar{top:4px;bottom:4px;opacity:.8}
.tl-dur{width:80px;flex:none;text-align:right;font-variant-numeric:tabular-nums}
.tl-axis{display:flex;justify-content:space-between;margin-left:260px;margin-right:80px;font-size:11px;color:#6b7385}
#failed li{color:#8e1c1c}
"""


def _e(value):
    return html.escape("" if value is None else str(value), quote=True)


def _cls(status):
    return "s-" + str(status or "not run").split(" (", maxsplit=1)[0].replace(" ", "-")


def _badge(status):
    return '<span class="badge %s">%s</span>' % (_cls(status), _e(status or "not run"))


def _html_parts(fact):
    return "".join("<code>%s</code>" % _e(p["text"]) if p["code"] else _e(p["text"]) for p in fact["parts"])


def _html_fact(fact):
    label = "<strong>%s:</strong> " % _e(fact["label"]) if fact.get("label") else ""
    body = _html_parts(fact)
    if fact.get("status") and fact.get("label") in ("Exit state", "Sign-off"):
        body = '<span class="badge %s">%s</span>' % (_cls(fact["status"]), body)
    cls = "level-%d" % fact.get("level", 0)
    if fact.get("status") == "failed":
        cls += " f-failed"
    return '<li class="%s">%s%s</li>' % (cls, label, body)


def _html_table(tab):
    out = ["<table><tr>%s</tr>" % "".join("<th>%s</th>" % _e(c) for c in tab["columns"])]
    for row in tab["rows"]:
        cells = []
        for i, cell in enumerate(row):
            cells.append("<td>%s</td>" % (_badge(cell) if i == tab.get("status_column") and cell else _e(cell)))
        out.append("<tr>%s</tr>" % "".join(cells))
    out.append("</table>")
    return "".join(out)


def _timeline_html(rows):
    moments = [m for row in rows for m in (parse_time(row.get("started")), parse_time(row.get("ended"))) if m]
    t0 = min(moments) if moments else None
    total = ((max(moments) - t0).total_seconds() if moments else 0.0) or 1.0

    def span_bar(item):
        start, end = parse_time(item.get("started")), parse_time(item.get("ended"))
        if not (t0 and start and end) or item.get("duration_s") is None:
            return ""
        left = 100.0 * (start - t0).total_seconds() / total
        width = 100.0 * max((end - start).total_seconds(), 0.0) / total
        return '<div class="tl-bar %s" style="left:%.2f%%;width:%.2f%%" title="%s"></div>' % (
            _cls(item.get("status")),
            left,
            width,
            _e("%s -> %s" % (item.get("started"), item.get("ended"))),
        )

    def secs(item, empty):
        return "%.1f s" % item["duration_s"] if item.get("duration_s") is not None else empty

    out = ['<div id="timeline-chart">']
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
                _e(secs(row, row["status"])),
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
                    _e(secs(h, "")),
                )
            )
    out.append(
        '<div class="tl-axis"><span>0 s</span><span>%.1f s</span><span>%.1f s</span><span>%.1f s</span>'
        "<span>%.1f s</span></div>" % (total / 4, total / 2, 3 * total / 4, total)
    )
    out.append("</div>")
    return "".join(out)


def render_html(rep):
    """A self-contained page (no script, no external resource) of every section, the timeline drawn."""
    secs = rep["sections"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>%s</title><style>%s</style></head><body><main>" % (_e(secs[0]["title"]), _CSS),
    ]
    for i, sec in enumerate(secs):
        tag = "h1" if i == 0 else "h2"
        parts.append('<section id="%s"><%s>%s</%s>' % (_e(sec["id"]), tag, _e(sec["title"]), tag))
        if sec["facts"]:
            parts.append('<ul class="facts">%s</ul>' % "".join(_html_fact(f) for f in sec["facts"]))
        if sec.get("chart") is not None:
            parts.append(_timeline_html(sec["chart"]))
        if sec["table"]:
            parts.append(_html_table(sec["table"]))
        if sec["items"] is not None:
            parts.append("<ul>%s</ul>" % "".join("<li>%s</li>" % _e(x) for x in sec["items"]))
        parts.append("</section>")
    parts.append("</main></body></html>")
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------------- JSON
def render_json(rep):
    return json.dumps(rep, indent=2, sort_keys=True, default=str) + "\n"


# ---------------------------------------------------------------------------------------- plain text
def _text_parts(fact):
    return "".join(p["text"] for p in fact["parts"])


def render_text(rep, only=None):
    """Plain text of the sections (all, or those whose ids are in ``only``), for mail and chat."""
    lines = []
    for sec in rep["sections"]:
        if only is not None and sec["id"] not in only:
            continue
        lines.append(sec["title"])
        for f in sec["facts"]:
            label = "%s: " % f["label"] if f.get("label") else ""
            lines.append("%s- %s%s" % ("  " * (1 + f.get("level", 0)), label, _text_parts(f)))
        tab = sec["table"]
        if tab:
            for row in tab["rows"]:
                cols = tab["columns"]
                lines.append("  - " + ", ".join("%s %s" % (cols[i], v) for i, v in enumerate(row) if v))
        for item in sec["items"] or []:
            lines.append("  - %s" % item)
    return "\n".join(lines) + "\n"


RENDERERS = {"md": render_markdown, "html": render_html, "json": render_json, "text": render_text}
