# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The release manifest's schema: every key at every depth, declared once as an Ansible argument spec.

``validate``, ``check_keys`` and ``check_types`` check a manifest against it with Ansible's own
``ArgumentSpecValidator`` (part of ansible-core, so available wherever the collection runs) and
turn what it finds into one sentence with the fix; an unknown key gets "did you mean ...".
``manifest.parse_manifest`` calls them around its checks of values (names, paths, URLs), and
``docs/manifest.md`` is generated from ``SCHEMA`` (``reference_markdown``, by ``.ci/manifest_reference.py``).
"""

from __future__ import annotations

import math
import re

from ansible_collections.release.rollback.plugins.module_utils import argspec as _argspec
from ansible_collections.release.rollback.plugins.module_utils import manual as _manual
from ansible_collections.release.rollback.plugins.module_utils.dbtools import registry as _db_tools


def _o(kind, description, **kw):
    """One option: its type, what it is (one sentence), and the argument spec's other keys."""
    out = {"type": kind, "description": description}
    out.update(kw)
    return out


_HTTP_CALL = {
    "method": _o("str", "HTTP method (GET, POST, PUT, PATCH, DELETE)."),
    "url": _o("str", "http:// or https:// URL, without credentials and without {token}."),
    "headers": _o("dict", "Headers; a value may contain {token} (the token from token_env)."),
}

SCHEMA = {
    "app": _o("str", "The application's name (letters, digits, '.', '_', ':' or '-'); default app."),
    "environment": _o(
        "str",
        "The environment's name (production, eu-staging, ...): every controller naming the same app and environment "
        "shares one environment lock and one release record; default: the inventory's path on the controller.",
    ),
    "version": _o("str", "The bad release (the one being rolled back); default: discovered on the hosts."),
    "previous_version": _o("str", "The release to roll back to; default: the previous known-good one per host."),
    "reason": _o("str", "Why the release is rolled back (at most 2000 characters); in the plan and the report."),
    "flags": _o(
        "dict",
        "The flag system that holds the release's feature flags, and which flags they are.",
        options={
            "backend": _o("str", "The flag system.", choices=["flagd", "unleash", "launchdarkly", "flagsmith", "http"]),
            "names": _o("list", "The release's flag keys (at least one).", elements="str", required=True),
            "file": _o("str", "flagd: the absolute path of the flagd JSON file."),
            "url": _o("str", "unleash, launchdarkly, flagsmith: the server's base URL."),
            "project": _o("str", "unleash, launchdarkly, http: the project (unleash: default)."),
            "environment": _o("str", "unleash, launchdarkly, flagsmith, http: the environment."),
            "token_env": _o("str", "The environment variable that holds the API token (never the token itself)."),
            "timeout": _o("float", "Seconds per request, 0.1 to 300; default 10."),
            "validate_certs": _o("bool", "Check the server's TLS certificate; default true."),
            "request": _o(
                "dict",
                "http: the call that turns one flag off ({flag} in url or body names it).",
                options=dict(
                    _HTTP_CALL,
                    body=_o("raw", "The request body (JSON when a mapping)."),
                    status=_o("raw", "Accepted status code(s); default any 2xx."),
                ),
            ),
            "read_back": _o(
                "dict",
                "http: the call that reads one flag back.",
                options=dict(
                    _HTTP_CALL,
                    field=_o("str", "Dotted path of the flag's state in the JSON answer; default enabled."),
                    off_value=_o("raw", "The value that means off; default false."),
                ),
            ),
        },
    ),
    "database": _o(
        "dict",
        "The release's migrations, rolled back to the previous release's revision after a verified backup.",
        options={
            "tool": _o("str", "The migration tool; default alembic.", choices=list(_db_tools.names())),
            "config": _o("str", "alembic: absolute path of the application's alembic.ini."),
            "migrations": _o(
                "str",
                "sql: directory of NNN_name.down.sql scripts; sqitch: the project directory; django, rails, knex, "
                "dbmate: the application's directory in the release.",
            ),
            "registry": _o("str", "sqitch: the registry schema or database."),
            "settings": _o("dict", "The tool's own settings (docs/database.md); a key it does not take is refused."),
            "url": _o("str", "Database URL; better from the inventory or Vault (rollback_db_url) or the environment."),
            "url_env": _o(
                "str",
                "The environment variable the application's env.py reads its URL from (besides DATABASE_URL).",
            ),
            "target_revision": _o(
                "raw",
                'The previous release\'s revision (required; quote an all-digit one: "0001"); django: a mapping '
                "of app to migration.",
                required=True,
            ),
            "python": _o("str", "alembic: absolute path of the Python that has the application's Alembic."),
            "backup_dir": _o("str", "Absolute directory for the backup taken before the first down step."),
            "critical_tables": _o("list", "Tables that must still exist afterwards.", elements="str"),
            "assertions": _o(
                "list",
                "SQL checks run afterwards; each query's first value is compared with expect.",
                elements="dict",
                options={
                    "name": _o("str", "The check's name in the report."),
                    "sql": _o("str", "The query (required).", required=True),
                    "expect": _o("raw", "The expected first value (compared as text); default true."),
                },
            ),
        },
    ),
    "infrastructure": _o(
        "dict",
        "The infrastructure change to revert: a config file, a Terraform/OpenTofu project, or your tasks.",
        options={
            "kind": _o("str", "What to revert; default config_file.", choices=["config_file", "terraform", "tasks"]),
            "path": _o("str", "config_file: the live file (absolute path)."),
            "snapshot": _o("str", "config_file: the file of each release, with {version} in its path."),
            "validate_command": _o("str", "config_file: validates a candidate ({path}) before it is put in place."),
            "reload_command": _o("str", "config_file: reloads the service after the file is restored."),
            "verify_url": _o("str", "config_file: URL read after the reload, without credentials."),
            "verify_contains": _o("str", "config_file: text the verify_url answer must contain."),
            "project_path": _o("str", "terraform: the project of each release, with {version} in its path."),
            "binary": _o("str", "terraform: terraform, tofu, or an absolute path; default terraform."),
            "workspace": _o("str", "terraform: the workspace."),
            "init": _o("bool", "terraform: run init first; default true."),
            "file": _o("str", "tasks: your revert tasks file, with {version} allowed in its path."),
        },
    ),
    "validation": _o(
        "dict",
        "How the validate stage proves the rollback: health and version per host, then service checks.",
        options={
            "retries": _o("int", "Health/version polls per host, 1 to 1000; default 20."),
            "delay": _o("float", "Seconds between polls, 0 to 60; default 0.5."),
            "timeout": _o("float", "Seconds per request, 0.1 to 300; default 5."),
            "smoke": _o(
                "list",
                "Smoke checks: an HTTP URL and its status, or a command.",
                elements="dict",
                options={
                    "name": _o("str", "The check's name in the report."),
                    "url": _o("str", "URL to request."),
                    "status": _o("int", "Expected HTTP status; default 200."),
                    "command": _o("raw", "A command (argument list or string; no shell) that must exit 0."),
                    "timeout": _o("float", "Seconds, 0.1 to 3600; default 30."),
                },
            ),
            "prometheus": _o(
                "dict",
                "Prometheus queries whose values must stay within thresholds.",
                options={
                    "url": _o("str", "Prometheus' base URL, without credentials.", required=True),
                    "queries": _o(
                        "list",
                        "The queries.",
                        elements="dict",
                        required=True,
                        options={
                            "name": _o("str", "The check's name in the report."),
                            "query": _o("str", "PromQL.", required=True),
                            "max": _o("float", "The value must stay at or below this."),
                            "min": _o("float", "The value must stay at or above this."),
                            "empty": _o("str", "What a query without data means.", choices=["fail", "pass"]),
                        },
                    ),
                    "retries": _o("int", "Attempts, 1 to 1000; default 1."),
                    "delay": _o("float", "Seconds between attempts, 0 to 300; default 5."),
                },
            ),
            "alertmanager": _o(
                "dict",
                "Alertmanager: no unsilenced alert may match.",
                options={
                    "url": _o("str", "Alertmanager's base URL, without credentials.", required=True),
                    "matchers": _o("list", 'Label matchers; default [service="APP"].', elements="str"),
                    "retries": _o("int", "Attempts, 1 to 1000; default 1."),
                    "delay": _o("float", "Seconds between attempts, 0 to 300; default 5."),
                },
            ),
        },
    ),
    "notify": _o(
        "dict",
        "Stakeholder notifications when the rollback starts and ends.",
        options={
            "report_url": _o("str", "Link to the report in messages ({run_id} allowed); default the report.html file."),
            "channels": _o(
                "list",
                "Where to send them.",
                elements="dict",
                options={
                    "kind": _o("str", "The channel.", choices=["slack", "webhook", "email"], required=True),
                    "name": _o("str", "The channel's name in the audit trail."),
                    "events": _o("list", "Which events it gets; default all.", elements="str"),
                    "url_env": _o("str", "slack, webhook: the variable that holds the URL."),
                    "url": _o("str", "webhook: the URL (not for Slack: a Slack webhook URL is a secret)."),
                    "token_env": _o("str", "webhook: the variable that holds a bearer token."),
                    "host": _o("str", "email: the SMTP server."),
                    "port": _o("int", "email: the SMTP port; default 25."),
                    "from": _o("str", "email: the sender's address."),
                    "to": _o("raw", "email: the recipients' addresses."),
                    "tls": _o("str", "email: none, starttls or ssl; default none."),
                    "username_env": _o("str", "email: the variable that holds the SMTP user."),
                    "password_env": _o("str", "email: the variable that holds the SMTP password."),
                },
            ),
        },
    ),
    "manual_steps": _o(
        "list",
        "Steps an operator does by hand, in the plan beside the automated ones (docs/runbooks.md).",
        elements="dict",
        options=dict(
            {k: dict(v, required=(k in ("title", "instructions", "stage"))) for k, v in _manual.STEP_OPTIONS.items()},
            source=_o("str", "Where the step comes from; set by `plan --runbook`.", choices=["manifest", "runbook"]),
        ),
    ),
    "runbook": _o(
        "dict",
        "Set by `plan --runbook`: the runbook merged into this manifest and the layers it supplied.",
        options={
            "name": _o("str", "The runbook's name."),
            "file": _o("str", "The runbook file."),
            "layers": _o("list", "The layers whose steps come from the runbook.", elements="str"),
            "with_manifest": _o("bool", "Whether a manifest was given besides the runbook."),
        },
    ),
    "rca": _o(
        "dict",
        "Where the root-cause analysis ticket is filed after a rollback that ran.",
        options={
            "kind": _o("str", "The tracker.", choices=["jira", "github", "webhook"], required=True),
            "labels": _o("list", "The ticket's labels; default rollback, rca.", elements="str"),
            "token_env": _o("str", "The variable that holds the tracker's token."),
            "url": _o("str", "jira: the base URL; webhook: the URL."),
            "url_env": _o("str", "webhook: the variable that holds the URL."),
            "api": _o("int", "jira: 2 (Server/Data Center) or 3 (Cloud); default 2."),
            "project": _o("str", "jira: the project key, e.g. OPS."),
            "issue_type": _o("str", "jira: the issue type; default Task."),
            "user_env": _o("str", "jira: the variable that holds the user (basic auth)."),
            "repo": _o("str", "github: OWNER/REPOSITORY."),
            "api_url": _o("str", "github: the API URL; default https://api.github.com."),
        },
    ),
}

# Keys that must never be in a manifest, with the sentence that says where they belong instead.
_FORBIDDEN = {
    ("flags", "token"): "flags.token: never put a token in the manifest; name the environment variable that holds "
    "it with flags.token_env, or set rollback_flags_token (e.g. from Ansible Vault)",
}


class SchemaError(ValueError):
    """The manifest does not fit the schema; the message is one sentence with the fix."""


def _spec():
    """``SCHEMA`` as ``ArgumentSpecValidator`` takes it (no descriptions)."""
    return _argspec.strip_descriptions(SCHEMA)


_VALIDATOR = []


def _plain(value):
    """``value`` as plain Python containers and scalars.

    Inside Ansible the manifest arrives as Ansible's own (tagged, lazily templated) containers; the
    validator copies and walks what it is given, which on those costs about 150 ms a manifest, on
    plain ones well under 1 ms.
    """
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float) and not math.isfinite(value):
        # NaN and the infinities crash the validator's int conversion: it gets a word instead, which is
        # no number either (the value checks of manifest.py refuse them with their own sentence).
        return "not-a-finite-number"
    for kind in (str, int, float):
        if isinstance(value, kind):
            return kind(value)
    return value


def _validate(data):
    if not _VALIDATOR:
        _VALIDATOR.append(_argspec.validator(_spec()))
    try:
        return _VALIDATOR[0].validate(_plain(data))
    except (ArithmeticError, ValueError, TypeError) as exc:
        raise SchemaError("the manifest has a value its schema cannot read (%s): check its numbers" % exc) from None


def options_at(path):
    """The options of the section at ``path`` (a tuple of keys; list elements have no index)."""
    return _argspec.options_at(SCHEMA, path)


def _where(path):
    """A dotted path for a sentence: a part that is not a plain word is quoted, control characters escaped."""
    return ".".join(_part(p) for p in path)


def _part(part):
    text = str(part)
    if re.match(r"^[A-Za-z0-9_-]{1,64}$", text):
        return text
    shown = repr(text)
    return shown if len(shown) <= 66 else shown[:60] + "...'"


def _type_name(value):
    return type(value).__name__


def check_shape(data, options=None, path=()):
    """Raise SchemaError where a section the schema nests options in is not a mapping (or list of them).

    Run before the validator, which expects that shape.
    """
    options = SCHEMA if options is None else options
    for key, value in data.items():
        if not isinstance(key, str):
            raise SchemaError(
                "%s has a key %r that is not text: keys are words" % (_where(path) or "the manifest", key)
            )
        opt = options.get(key)
        if not opt or not opt.get("options") or value is None:
            continue
        where = _where(path + (key,))
        if opt["type"] == "dict":
            if not isinstance(value, dict):
                raise SchemaError("%s must be a mapping (key: value lines), not %s" % (where, _type_name(value)))
            check_shape(value, opt["options"], path + (key,))
        else:
            if not isinstance(value, list):
                raise SchemaError("%s must be a list, not %s" % (where, _type_name(value)))
            for i, item in enumerate(value):
                if not isinstance(item, dict):
                    raise SchemaError(
                        "%s[%d] must be a mapping (key: value lines), not %s" % (where, i, _type_name(item))
                    )
                check_shape(item, opt["options"], path + (key,))


def validate(data):
    """Check ``data``'s shape and run the validator once; the result is for ``check_keys`` and ``check_types``."""
    check_shape(data)
    return _validate(data)


def check_keys(result):
    """Raise SchemaError for the first unknown key at any depth, with the key it most likely meant."""
    unknown = _argspec.unknown_keys(result)
    for path in sorted(unknown):
        if path in _FORBIDDEN:
            raise SchemaError(_FORBIDDEN[path])
    for path in unknown:
        section, key = path[:-1], path[-1]
        known = sorted(options_at(section))
        hint = _argspec.closest(key, known)
        if not section:
            raise SchemaError("unknown manifest key %r%s: the keys are %s" % (key, hint, ", ".join(known)))
        raise SchemaError(
            "unknown key %s%s: the keys of %s are %s" % (_where(path), hint, _where(section), ", ".join(known))
        )


def check_types(result):
    """Raise SchemaError for the first value whose type, choice or presence the schema does not allow."""
    errors = [e for e in result.errors.errors if type(e).__name__ != "UnsupportedError"]
    if errors:
        msg = str(errors[0]).strip().rstrip(".")
        raise SchemaError("the manifest does not fit its schema: %s; see docs/manifest.md" % msg)


# ------------------------------------------------------------------------------------- the reference
def reference_markdown():
    """``docs/manifest.md``: every key of the manifest, generated from ``SCHEMA``."""
    lines = [
        "# The release manifest",
        "",
        "<!-- Generated from plugins/module_utils/manifest_schema.py by `.venv/bin/python .ci/manifest_reference.py`;"
        " do not edit by hand. -->",
        "",
        "A YAML file with one key, `rollback_manifest`, holding the keys below (or those keys alone).",
        "Every key at every depth is checked against this schema before anything is written: an unknown",
        "key is refused with the key it most likely meant. All keys are optional unless marked required.",
        "",
    ]

    def rows(options, path):
        out = ["| key | type | required | what it is |", "|---|---|---|---|"]
        for name, opt in options.items():
            kind = opt["type"] if opt["type"] != "list" else "list of %s" % opt.get("elements", "raw")
            text = opt["description"]
            if opt.get("choices"):
                text += " One of %s." % ", ".join("`%s`" % c for c in opt["choices"])
            out.append(
                "| `%s` | %s | %s | %s |" % (_where(path + (name,)), kind, "yes" if opt.get("required") else "", text)
            )
        return out

    queue = [((), {"options": SCHEMA, "description": "The manifest's top-level keys."})]
    while queue:
        path, opt = queue.pop(0)
        title = "`%s`" % _where(path) if path else "Top level"
        each = " Each item of the list is a mapping with these keys." if opt.get("type") == "list" else ""
        lines += ["## %s" % title, "", opt["description"] + each, ""] + rows(opt["options"], path) + [""]
        queue = [(path + (n,), o) for n, o in opt["options"].items() if o.get("options")] + queue
    return "\n".join(lines).rstrip("\n") + "\n"
