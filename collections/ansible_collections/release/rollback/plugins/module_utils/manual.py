# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Manual steps and runbooks: the steps an operator does by hand, in the plan beside the automated ones.

A manual step belongs to a stage (before or after its automated work), has an owner, instructions
(Markdown) and says whether it blocks what follows. It comes from the manifest (``manual_steps``) or
from a runbook file (the organisation's standard steps per layer, ``compose`` merges it into the
manifest). The plan lists the steps in order and the approval binds them (they are part of the plan's
hash). A blocking step nobody confirmed keeps every later stage from starting: the run is *waiting for
operator* until ``release-rollback confirm`` records who did it (or that it failed: the stage's failure
rule then applies).

Pure Python; the runbook is checked with Ansible's ``ArgumentSpecValidator``, like the manifest.
"""

from __future__ import annotations

import re

from ansible_collections.release.rollback.plugins.module_utils import argspec as _argspec
from ansible_collections.release.rollback.plugins.module_utils import stages as _stages

# The stages a manual step may belong to, in the procedure's order (the report is not one).
LAYERS = ("feature_flags", "code_config", "database", "infrastructure", "validate")
POSITIONS = ("before", "after")
# The manifest section that holds a layer's automated parameters.
SECTIONS = {
    "feature_flags": "flags",
    "database": "database",
    "infrastructure": "infrastructure",
    "validate": "validation",
}

CONFIRMED = "confirmed"
FAILED = "failed"

_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")

STEP_OPTIONS = {
    "id": {
        "type": "str",
        "description": "A short name for `confirm` (letters, digits, - and _); default from the title.",
    },
    "title": {"type": "str", "required": True, "description": "What the step is, in a few words."},
    "instructions": {"type": "str", "required": True, "description": "What to do, in Markdown (links allowed)."},
    "stage": {"type": "str", "choices": list(LAYERS), "description": "The stage it belongs to (runbook: its layer)."},
    "position": {
        "type": "str",
        "choices": list(POSITIONS),
        "description": "Before or after the stage's automated work; default after.",
    },
    "owner": {"type": "str", "description": "The role that does it, e.g. web on-call; default operator."},
    "blocking": {"type": "bool", "description": "Whether the next step waits for its confirmation; default true."},
}

RUNBOOK_SCHEMA = {
    "name": {"type": "str", "description": "The runbook's name, shown in the plan and the report."},
    "app": {"type": "str", "description": "The application it is for; a plan for another application refuses it."},
    "layers": {
        "type": "dict",
        "required": True,
        "description": "The standard steps per layer (feature_flags, code_config, database, infrastructure, validate).",
        "options": {
            layer: {
                "type": "dict",
                "description": "The %s layer's standard steps." % layer,
                "options": {
                    "automated": {
                        "type": "raw",
                        "description": "true, or the manifest section's parameters (%s)."
                        % (SECTIONS.get(layer) or "none: true or false"),
                    },
                    "manual": {
                        "type": "list",
                        "elements": "dict",
                        "description": "Manual steps of the layer.",
                        "options": {k: v for k, v in STEP_OPTIONS.items() if k != "stage"},
                    },
                },
            }
            for layer in LAYERS
        },
    },
}


class RunbookError(ValueError):
    """A runbook that cannot be used; the message is one sentence with the fix."""


def slug(title):
    return re.sub(r"[^a-z0-9]+", "-", str(title).lower()).strip("-")[:64] or "step"


def normalise_steps(steps, source="manifest", where="manual_steps"):
    """Checked manual steps with every default filled in. Raises ValueError with one sentence."""
    out, seen = [], set()
    for i, step in enumerate(steps or []):
        if not isinstance(step, dict):
            raise ValueError("%s[%d] must be a mapping with title, instructions and stage" % (where, i))
        for key in ("title", "instructions"):
            if not isinstance(step.get(key), str) or not step[key].strip():
                raise ValueError("%s[%d] needs %s (text)" % (where, i, key))
        if len(step["title"]) > 200 or "\n" in step["title"]:
            raise ValueError("%s[%d].title must be one line of at most 200 characters" % (where, i))
        if len(step["instructions"]) > 20000:
            raise ValueError("%s[%d].instructions must be at most 20000 characters" % (where, i))
        stage = step.get("stage")
        if stage not in LAYERS:
            raise ValueError("%s[%d].stage must be one of %s, not %r" % (where, i, ", ".join(LAYERS), stage))
        position = step.get("position") or "after"
        if position not in POSITIONS:
            raise ValueError("%s[%d].position must be before or after, not %r" % (where, i, position))
        ident = step.get("id") or slug(step["title"])
        if not isinstance(ident, str) or not _ID_RE.match(ident):
            raise ValueError("%s[%d].id %r must be letters, digits, - or _ (at most 64)" % (where, i, ident))
        if ident in seen:
            raise ValueError("%s[%d]: two manual steps are named %s: give one of them another id" % (where, i, ident))
        seen.add(ident)
        blocking = step.get("blocking", True)
        if not isinstance(blocking, bool):
            raise ValueError("%s[%d].blocking must be true or false" % (where, i))
        out.append(
            {
                "id": ident,
                "title": step["title"].strip(),
                "instructions": step["instructions"].strip(),
                "stage": stage,
                "position": position,
                "owner": str(step.get("owner") or "operator"),
                "blocking": blocking,
                "source": step.get("source") if step.get("source") in ("manifest", "runbook") else source,
            }
        )
    return out


# ------------------------------------------------------------------------------------------ runbooks
def check_runbook(data, path="the runbook"):
    """A runbook file's content, checked against ``RUNBOOK_SCHEMA``: ``{"name", "app", "layers"}``."""
    if isinstance(data, dict) and set(data) == {"runbook"}:
        data = data["runbook"]
    if not isinstance(data, dict):
        raise RunbookError(
            "%s is not a mapping: write it as `runbook:` with `layers:` under it (see docs/runbooks.md)" % path
        )
    for layer, spec in (data.get("layers") or {}).items() if isinstance(data.get("layers"), dict) else ():
        if not isinstance(spec, dict):
            raise RunbookError(
                "%s: layers.%s must be a mapping with automated and/or manual (see docs/runbooks.md)" % (path, layer)
            )
    result = _argspec.validator(_argspec.strip_descriptions(RUNBOOK_SCHEMA)).validate(data)
    unknown = sorted(_argspec.unknown_keys(result))
    if unknown:
        where = unknown[0]
        options = _argspec.options_at(RUNBOOK_SCHEMA, where[:-1])
        known = sorted(options) if where[:-1] else list(RUNBOOK_SCHEMA)
        raise RunbookError(
            "%s has an unknown key %s%s: the keys there are %s"
            % (path, ".".join(str(k) for k in where), _argspec.closest(where[-1], known), ", ".join(known))
        )
    errors = [e for e in result.errors.errors if type(e).__name__ != "UnsupportedError"]
    if errors:
        raise RunbookError("%s does not fit its schema: %s; see docs/runbooks.md" % (path, str(errors[0]).rstrip(".")))
    layers = {}
    for layer, spec in (data.get("layers") or {}).items():
        spec = spec or {}
        automated = spec.get("automated")
        if automated is not None and not isinstance(automated, (bool, dict)):
            raise RunbookError(
                "%s: layers.%s.automated must be true, false or the manifest's %s parameters"
                % (path, layer, SECTIONS.get(layer, layer))
            )
        if isinstance(automated, dict) and layer not in SECTIONS:
            raise RunbookError("%s: layers.%s.automated takes no parameters: write true" % (path, layer))
        try:
            manual = normalise_steps(
                [dict(s, stage=layer) for s in spec.get("manual") or []], "runbook", "layers.%s.manual" % layer
            )
        except ValueError as exc:
            raise RunbookError("%s: %s" % (path, exc)) from None
        layers[layer] = {"automated": automated, "manual": manual}
    if not layers:
        raise RunbookError("%s declares no layer: give at least one under layers (see docs/runbooks.md)" % path)
    return {"name": data.get("name") or "runbook", "app": data.get("app"), "layers": layers}


def compose(manifest, runbook, runbook_file=None):
    """The manifest (raw mapping, possibly empty) with the runbook merged in.

    A layer's automated parameters go into the manifest's section when the manifest has none; the
    runbook's manual steps are added unless the manifest has a step of the same id. ``runbook`` in the
    result names the runbook and the layers it supplied (the plan labels those steps "from runbook").
    """
    out = dict(manifest or {})
    if "rollback_manifest" in out and len(out) == 1:
        out = dict(out["rollback_manifest"] or {})
    if runbook.get("app") and out.get("app") and runbook["app"] != out["app"]:
        raise RunbookError(
            "the runbook is for application %s, the manifest for %s: give the runbook of %s"
            % (runbook["app"], out["app"], out["app"])
        )
    if runbook.get("app") and not out.get("app"):
        out["app"] = runbook["app"]
    supplied = []
    steps = [dict(s) for s in out.get("manual_steps") or []]
    have = {s.get("id") or slug(s.get("title")) for s in steps if isinstance(s, dict)}
    for layer in LAYERS:
        spec = runbook["layers"].get(layer)
        if not spec:
            continue
        automated = spec["automated"]
        section = SECTIONS.get(layer)
        if isinstance(automated, dict) and section and out.get(section) is None:
            out[section] = automated
            supplied.append(layer)
        elif automated is True and (section is None or out.get(section) is None) and not manifest:
            supplied.append(layer)
        for step in spec["manual"]:
            if step["id"] not in have:
                steps.append(
                    {k: step[k] for k in ("id", "title", "instructions", "stage", "position", "owner", "blocking")}
                )
                steps[-1]["source"] = "runbook"
                have.add(step["id"])
    if steps:
        out["manual_steps"] = steps
    out["runbook"] = {
        "name": runbook["name"],
        "file": runbook_file or "",
        "layers": supplied,
        "with_manifest": bool(manifest),
    }
    return out


# ------------------------------------------------------------------------------------------ the run
def sequence(steps):
    """The plan's order: per stage, its manual steps before, the stage, its manual steps after.
    Yields ``("stage", name)`` and ``("manual", step)``."""
    for layer in LAYERS:
        for step in steps or []:
            if step["stage"] == layer and step["position"] == "before":
                yield "manual", step
        yield "stage", layer
        for step in steps or []:
            if step["stage"] == layer and step["position"] == "after":
                yield "manual", step


def approach(scope, steps):
    """Each layer's approach: automated, manual or hybrid (layers with neither are left out)."""
    out = {}
    for layer in LAYERS:
        manual = any(s["stage"] == layer for s in steps or [])
        auto = layer in (scope or [])
        if auto or manual:
            out[layer] = "hybrid" if auto and manual else ("manual" if manual else "automated")
    return out


def gate(stage, plan, records):
    """None when no manual step keeps ``stage`` from starting; else the gate that keeps it.

    A blocking step before ``stage`` that nobody confirmed: ``stop`` (waiting for operator, nothing is
    recorded for the stage). A step before it that failed and whose stage's failure rule halts (or that
    comes before this very stage's automated work): the stage does not run, as a halted stage would not.
    """
    if stage not in LAYERS:
        return None
    records = records or {}
    for kind, item in sequence((plan or {}).get("manual_steps")):
        if kind == "stage":
            if item == stage:
                return None
            continue
        rec = records.get(item["id"]) or {}
        if rec.get("status") == FAILED:
            verdict = _stages.decide(item["stage"], _stages.FAILED)
            if verdict["halt"] or item["stage"] == stage:
                return {
                    "run": False,
                    "status": _stages.SKIPPED,
                    "reached": False,
                    "reason": "manual step %s (%s) failed: %s"
                    % (item["id"], item["title"], rec.get("note") or "no note"),
                }
        elif rec.get("status") != CONFIRMED and item["blocking"]:
            return {
                "run": False,
                "stop": True,
                "waiting": item["id"],
                "status": _stages.SKIPPED,
                "reached": False,
                "reason": "waiting for operator: manual step %s (%s) is not confirmed" % (item["id"], item["title"]),
            }
    return None


def waiting(plan, results, records):
    """The blocking manual step the run waits for now, or None: the first one nobody confirmed whose
    earlier stages (in scope) all finished. A stage that did not finish means the step is not reached."""
    records = records or {}
    scope = (plan or {}).get("scope") or []
    for kind, item in sequence((plan or {}).get("manual_steps")):
        if kind == "stage":
            res = (results or {}).get(item)
            if item in scope and not (res and _finished(res)):
                return None
            continue
        rec = records.get(item["id"]) or {}
        if rec.get("status") == FAILED and _stages.decide(item["stage"], _stages.FAILED)["halt"]:
            return None
        if not rec.get("status") and item["blocking"]:
            return item
    return None


def _finished(res):
    return res.get("status") == _stages.OK or (res.get("status") == _stages.SKIPPED and res.get("reached") is not False)


def gaps(plan, records):
    """One line per manual step that did not end confirmed: failed (with who said so and the note) or
    not confirmed."""
    out = []
    for step in (plan or {}).get("manual_steps") or []:
        rec = (records or {}).get(step["id"]) or {}
        where = "%s %s" % (step["position"], step["stage"])
        if rec.get("status") == FAILED:
            out.append(
                "manual step %s (%s, %s, owner %s) failed, recorded by %s at %s: %s"
                % (step["id"], step["title"], where, step["owner"], rec.get("by"), rec.get("at"), rec.get("note") or "")
            )
        elif rec.get("status") != CONFIRMED:
            out.append(
                "manual step %s (%s, %s, owner %s) was not confirmed"
                % (step["id"], step["title"], where, step["owner"])
            )
    return out


def find(plan, ident):
    for step in (plan or {}).get("manual_steps") or []:
        if step["id"] == ident:
            return step
    return None


# --------------------------------------------------------------------------------------------- AWX
AWX_RECORD_TEMPLATE = "release-rollback manual step"


def awx_node_id(step):
    return "manual_%s" % step["id"]


def awx_workflow_nodes(nodes, steps, organization="{{ rollback_awx_organization }}", timeout=None):
    """The AWX workflow's nodes with an approval node per blocking manual step (its instructions in the
    node's description), each followed by the job that records who approved it as the step's confirmation
    (``rollback_manual_confirmations``). Approving is confirming; denying is the step failing, and the
    failure rule of the step's stage applies (halt: to the report; continue: past the stage).

    ``nodes``: ``workflow_nodes`` in awx.awx.workflow_job_template's format (stage nodes named by stage);
    ``steps``: the manual steps (``normalise_steps``). Non-blocking steps get no node.
    """
    out = [_copy_node(n) for n in nodes]
    by_id = {n["identifier"]: n for n in out}

    def targets(node, kinds=("success_nodes", "always_nodes")):
        return [e["identifier"] for k in kinds for e in node["related"][k]]

    def edges(idents):
        return [{"identifier": i} for i in idents]

    def add(step, onward, denied):
        approval = awx_node_id(step)
        record = approval + "_record"
        description = "Manual step %s (owner %s, %s %s): %s Approve once it is done; deny if it could not be done." % (
            step["title"],
            step["owner"],
            step["position"],
            step["stage"],
            step["instructions"],
        )
        ujt = {"name": "release-rollback manual step: %s" % step["title"], "type": "workflow_approval"}
        ujt["description"] = description
        if timeout is not None:
            ujt["timeout"] = timeout
        out.append(
            {
                "identifier": approval,
                "unified_job_template": ujt,
                "related": {"success_nodes": edges([record]), "failure_nodes": edges(denied), "always_nodes": []},
            }
        )
        out.append(
            {
                "identifier": record,
                "unified_job_template": {
                    "name": AWX_RECORD_TEMPLATE,
                    "type": "job_template",
                    "organization": {"name": organization},
                },
                "extra_data": {"rollback_manual_step": step["id"]},
                "related": {"success_nodes": edges(onward), "failure_nodes": edges(["report"]), "always_nodes": []},
            }
        )
        by_id[approval], by_id[record] = out[-2], out[-1]
        return approval

    blocking = [s for s in steps or [] if s["blocking"]]
    for step in [s for s in blocking if s["position"] == "before"]:
        stage = by_id[step["stage"]]
        onward = targets(stage)
        halts = _stages.decide(step["stage"], _stages.FAILED)["halt"]
        first = add(step, [step["stage"]], ["report"] if halts else onward)
        for node in out:
            if node["identifier"] == first:
                continue
            for kind in ("success_nodes", "failure_nodes", "always_nodes"):
                node["related"][kind] = [
                    {"identifier": first} if e["identifier"] == step["stage"] else e for e in node["related"][kind]
                ]
        by_id[first + "_record"]["related"]["success_nodes"] = edges([step["stage"]])
    for step in reversed([s for s in blocking if s["position"] == "after"]):
        stage = by_id[step["stage"]]
        # Where the stage goes when it did not halt the rollback (its success, or always, edges).
        kind = "success_nodes" if stage["related"]["success_nodes"] else "always_nodes"
        onward = targets(stage, (kind,))
        halts = _stages.decide(step["stage"], _stages.FAILED)["halt"]
        first = add(step, onward, ["report"] if halts else onward)
        stage["related"][kind] = edges([first])
    return out


def _copy_node(node):
    out = dict(node)
    out["related"] = {k: [dict(e) for e in v] for k, v in node["related"].items()}
    return out
