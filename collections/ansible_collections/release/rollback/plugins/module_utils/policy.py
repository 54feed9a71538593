# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pre-approved standard rollbacks (an ITIL standard change) and the event triggers' configuration.

A *standard-change policy* is a file reviewed like code. It says when a rollback may run without a
person: which stages it may change, within how many minutes of the deploy, how many automatic
rollbacks a release may get, inside which change window. A destructive database step is never
pre-approved. ``load_policy`` checks the file with ansible-core's ``ArgumentSpecValidator`` and
returns it with its sha256 (the approval of record names that hash); ``unmet`` lists the policy's
conditions a plan does not meet (none: the rollback may run with the policy as its approval).

``load_triggers`` checks the event triggers' configuration (which inventory, manifest and policy
serve which application and environment). Every problem is one sentence with the fix.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timedelta, timezone

from ansible.module_utils.errors import UnsupportedError
from ansible_collections.release.rollback.plugins.module_utils import argspec as _argspec
from ansible_collections.release.rollback.plugins.module_utils.report_model import parse_time

# The stages a policy may pre-approve (validate and report change nothing).
CHANGING_STAGES = ("feature_flags", "code_config", "database", "infrastructure")
TRIGGER_KINDS = ("alert", "deploy", "validation")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HHMM = re.compile(r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
MAX_FILE_BYTES = 64 * 1024

POLICY_SPEC = {
    "standard_change": {
        "type": "dict",
        "required": True,
        "options": {
            "name": {"type": "str", "required": True},
            "description": {"type": "str", "default": ""},
            "app": {"type": "str"},
            "environment": {"type": "str"},
            "triggers": {"type": "list", "elements": "str", "choices": list(TRIGGER_KINDS)},
            "scope": {"type": "list", "elements": "str", "choices": list(CHANGING_STAGES), "required": True},
            "max_minutes_since_deploy": {"type": "int", "required": True},
            "max_automatic_per_release": {"type": "int", "default": 1},
            "change_window": {
                "type": "dict",
                "required": True,
                "options": {
                    "days": {"type": "list", "elements": "str", "choices": list(DAYS), "required": True},
                    "start": {"type": "str", "required": True},
                    "end": {"type": "str", "required": True},
                },
            },
        },
    }
}

TRIGGERS_SPEC = {
    "rollback_triggers": {
        "type": "dict",
        "required": True,
        "options": {
            "runs_dir": {"type": "path"},
            "labels": {
                "type": "dict",
                "default": {},
                "options": {
                    "app": {"type": "str", "default": "app"},
                    "environment": {"type": "str", "default": "environment"},
                },
            },
            "environments": {
                "type": "list",
                "elements": "dict",
                "required": True,
                "options": {
                    "app": {"type": "str", "required": True},
                    "environment": {"type": "str", "required": True},
                    "inventory": {"type": "path", "required": True},
                    "manifest": {"type": "path", "required": True},
                    "alert_window_minutes": {"type": "int", "default": 60},
                    "policy": {"type": "path"},
                },
            },
        },
    }
}

POLICY_EXAMPLE = (
    "standard_change: {name: flags-and-code, scope: [feature_flags, code_config], max_minutes_since_deploy: 30, "
    "change_window: {days: [mon, tue, wed, thu, fri], start: '08:00', end: '18:00'}}"
)


class PolicyError(ValueError):
    """A policy or trigger configuration that cannot be used: one sentence with the fix."""


def _first_error(spec, data, what, fix):
    result = _argspec.validator(spec).validate(data)
    if result.error_messages:
        msg = result.error_messages[0].rstrip(".")
        if isinstance(result.errors.errors[0], UnsupportedError):
            # "standard_change.x. Supported parameters include: a, b" -> one sentence naming the key
            key, _sep, known = msg.partition(". Supported parameters include: ")
            key = key.replace("Unsupported parameters for (basic.py) module: ", "")
            msg = "unknown key %s (known keys: %s)" % (key, known) if known else msg
        raise PolicyError("%s is invalid: %s; %s" % (what, msg, fix))
    return result.validated_parameters


def _read_yaml(path, what, loader):
    """``(document, sha256 of the bytes)``. ``loader(bytes)`` parses YAML (the driver's bounded loader)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise PolicyError("%s %s cannot be read (%s): check the path" % (what, path, exc.strerror or exc)) from None
    if len(data) > MAX_FILE_BYTES:
        raise PolicyError("%s %s is over %d KiB: it is not a %s" % (what, path, MAX_FILE_BYTES // 1024, what))
    try:
        doc = loader(data)
    except ValueError as exc:
        mark = getattr(exc, "mark", None) or getattr(exc, "problem_mark", None)
        if mark is not None or str(exc) == "not valid YAML":
            where = " at line %d" % (mark.line + 1) if mark else ""
            raise PolicyError("%s %s is not valid YAML%s: fix the syntax there" % (what, path, where)) from None
        raise PolicyError("%s %s cannot be read: it %s" % (what, path, exc)) from None
    return doc, hashlib.sha256(data).hexdigest()


def parse_policy(doc, path="the policy"):
    """Check a policy document; returns its ``standard_change`` mapping. Raises PolicyError."""
    if not isinstance(doc, dict):
        raise PolicyError("%s must be a mapping with a standard_change key, e.g. %s" % (path, POLICY_EXAMPLE))
    fix = "fix it in the policy file, e.g. %s" % POLICY_EXAMPLE
    policy = _first_error(POLICY_SPEC, doc, path, fix)["standard_change"]
    if not _NAME.match(policy["name"]):
        raise PolicyError(
            "%s: standard_change.name %r must be letters, digits, '.', '_', ':' or '-' (at most 64): rename it"
            % (path, policy["name"])
        )
    if not policy["scope"]:
        raise PolicyError("%s: standard_change.scope is empty: list the stages it pre-approves" % path)
    if not 1 <= policy["max_minutes_since_deploy"] <= 24 * 60:
        raise PolicyError("%s: standard_change.max_minutes_since_deploy must be 1 to 1440 minutes" % path)
    if not 1 <= policy["max_automatic_per_release"] <= 10:
        raise PolicyError("%s: standard_change.max_automatic_per_release must be 1 to 10" % path)
    window = policy["change_window"]
    for key in ("start", "end"):
        if not _HHMM.match(window[key]):
            raise PolicyError(
                "%s: standard_change.change_window.%s %r must be HH:MM in UTC, e.g. '08:00'" % (path, key, window[key])
            )
    if window["start"] == "24:00":
        raise PolicyError("%s: standard_change.change_window.start cannot be 24:00: start at 00:00" % path)
    if window["start"] == window["end"]:
        raise PolicyError(
            "%s: standard_change.change_window starts and ends at %s: give a window" % (path, window["start"])
        )
    if not window["days"]:
        raise PolicyError("%s: standard_change.change_window.days is empty: list the days, e.g. [mon, tue]" % path)
    policy["triggers"] = list(policy.get("triggers") or TRIGGER_KINDS)
    return policy


def load_policy(path, loader):
    """Read and check a policy file: ``(policy, sha256 of the file's bytes)``. Raises PolicyError."""
    doc, sha = _read_yaml(path, "the policy", loader)
    return parse_policy(doc, "the policy %s" % path), sha


def load_triggers(path, loader):
    """Read and check the triggers' configuration file. Raises PolicyError."""
    doc, _sha = _read_yaml(path, "the trigger configuration", loader)
    if not isinstance(doc, dict):
        raise PolicyError("the trigger configuration %s must be a mapping with a rollback_triggers key" % path)
    fix = "fix it in %s (see docs/eda.md)" % path
    config = _first_error(TRIGGERS_SPEC, doc, "the trigger configuration %s" % path, fix)["rollback_triggers"]
    seen = set()
    for env in config["environments"]:
        key = (env["app"], env["environment"])
        if key in seen:
            raise PolicyError(
                "the trigger configuration %s lists app %s environment %s twice: keep one entry"
                % (path, key[0], key[1])
            )
        seen.add(key)
        if env["alert_window_minutes"] < 1:
            raise PolicyError("the trigger configuration %s: alert_window_minutes must be at least 1" % path)
    return config


def in_window(window, now):
    """Whether ``now`` (aware datetime) is inside the change window (UTC days and times)."""
    now = now.astimezone(timezone.utc)
    minutes = now.hour * 60 + now.minute
    start = int(window["start"][:2]) * 60 + int(window["start"][3:])
    end = int(window["end"][:2]) * 60 + int(window["end"][3:])
    day = DAYS[now.weekday()]
    if start < end:
        return day in window["days"] and start <= minutes < end
    # Over midnight: the part after midnight belongs to the previous day's window.
    if minutes >= start:
        return day in window["days"]
    return minutes < end and DAYS[(now - timedelta(days=1)).weekday()] in window["days"]


def unmet(policy, facts):
    """The policy's conditions that ``facts`` do not meet, one sentence each; empty when it holds.

    ``facts``: ``app``, ``environment``, ``kind`` (alert, deploy, validation), ``plan`` (the plan
    made by assess), ``destructive`` (the plan's destructive changes), ``deploy_time`` and ``now``
    (ISO 8601), ``automatic_runs`` (earlier automatic rollbacks of the same release). A plan with a
    manual step (docs/runbooks.md) is never pre-approved: a person must do it.
    """
    out = []
    plan = facts.get("plan") or {}
    if policy.get("app") and policy["app"] != facts.get("app"):
        out.append("the policy is for app %s, not %s" % (policy["app"], facts.get("app")))
    if policy.get("environment") and policy["environment"] != facts.get("environment"):
        out.append("the policy is for environment %s, not %s" % (policy["environment"], facts.get("environment")))
    if facts.get("kind") not in policy["triggers"]:
        out.append(
            "the policy does not cover a %s trigger (only %s)" % (facts.get("kind"), ", ".join(policy["triggers"]))
        )
    if plan.get("blockers"):
        out.append("the plan is blocked")
    changing = [s for s in (plan.get("scope") or CHANGING_STAGES) if s in CHANGING_STAGES]
    outside = [s for s in changing if s not in policy["scope"]]
    if outside:
        out.append(
            "the plan changes %s, outside the policy's scope (%s)" % (", ".join(outside), ", ".join(policy["scope"]))
        )
    for change in facts.get("destructive") or []:
        out.append("the plan has a destructive step, never pre-approved: %s (%s)" % (change["what"], change["why"]))
    manual = [m.get("title") or m.get("id") for m in plan.get("manual_steps") or []]
    if manual:
        # A manual step needs a person (docs/runbooks.md): a rollback that has one is never run without one.
        out.append("the plan has manual steps a person must do, never pre-approved: %s" % ", ".join(manual))
    now = parse_time(facts.get("now")) or datetime.now(timezone.utc)
    deployed = parse_time(facts.get("deploy_time"))
    if deployed is None:
        out.append("no deploy time is recorded, so the time since the deploy is unknown")
    else:
        minutes = (now - deployed).total_seconds() / 60.0
        if minutes > policy["max_minutes_since_deploy"]:
            out.append(
                "the deploy was %.0f minutes ago, more than the policy's %d"
                % (minutes, policy["max_minutes_since_deploy"])
            )
    done = int(facts.get("automatic_runs") or 0)
    if done >= policy["max_automatic_per_release"]:
        out.append(
            "release %s already had %d automatic rollback(s), the policy allows %d"
            % (plan.get("from_version"), done, policy["max_automatic_per_release"])
        )
    window = policy["change_window"]
    if not in_window(window, now):
        out.append(
            "%s is outside the policy's change window (%s %s-%s UTC)"
            % (now.strftime("%a %H:%M"), ",".join(window["days"]), window["start"], window["end"])
        )
    return out
