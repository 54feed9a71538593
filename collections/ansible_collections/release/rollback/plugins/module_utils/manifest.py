# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The release manifest: what the deployment of the bad release recorded.

Parsed at the edge into a normalised dict; every error is one sentence that says what is wrong
and how to fix it. The keys and their types are declared once, in ``manifest_schema.SCHEMA``, and
checked there at every depth (unknown keys first, with a suggestion); this module checks the values
(release names, paths, URLs, secrets) and normalises them. Pure Python (standard library and
ansible-core's argument spec validator).
"""

from __future__ import annotations

import re

from ansible_collections.release.rollback.plugins.module_utils import manifest_schema as _schema
from ansible_collections.release.rollback.plugins.module_utils import manual as _manual
from ansible_collections.release.rollback.plugins.module_utils import names as _release_names
from ansible_collections.release.rollback.plugins.module_utils import notify as _notify
from ansible_collections.release.rollback.plugins.module_utils import rca as _rca
from ansible_collections.release.rollback.plugins.module_utils.dbtools import registry as _db_tools

# Release names: ansistrano timestamps, Capistrano timestamps, semantic versions, git shas.
_VERSION_RE = _release_names.VERSION_RE
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")

FLAG_BACKENDS = ("flagd", "unleash", "launchdarkly", "flagsmith", "http")
# Keys of the flags section besides backend and names, by backend (required ones first in _FLAG_REQUIRED).
_FLAG_KEYS = {
    "flagd": ("file",),
    "unleash": ("url", "project", "environment", "token_env", "timeout", "validate_certs"),
    "launchdarkly": ("url", "project", "environment", "token_env", "timeout", "validate_certs"),
    "flagsmith": ("url", "environment", "token_env", "timeout", "validate_certs"),
    "http": ("request", "read_back", "project", "environment", "token_env", "timeout", "validate_certs"),
}
_FLAG_REQUIRED = {
    "flagd": ("file",),
    "unleash": ("url", "environment"),
    "launchdarkly": ("project", "environment"),
    "flagsmith": ("environment",),
    "http": ("request", "read_back"),
}
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
DB_TOOLS = _db_tools.names()
INFRA_KINDS = ("config_file", "terraform", "tasks")
KNOWN_KEYS = set(_schema.SCHEMA)


class ManifestError(ValueError):
    """A manifest that cannot be used; the message is one sentence with the fix."""


def _db_target(target, kind):
    """The target revision as the tool writes it: a string; a mapping for tools with one per app."""
    if target is None:
        raise ManifestError("database.target_revision is missing: give the previous release's revision")
    if isinstance(target, dict) and kind.per_app:
        # Django: {app: migration}, the form `manage.py migrate APP MIGRATION` takes, one per app.
        parts = []
        for app in sorted(target, key=str):
            mig = target[app]
            if not isinstance(app, str) or not isinstance(mig, str) or not app or not mig:
                raise ManifestError(
                    "database.target_revision maps each app to its migration name as text "
                    "(shop: 0002_add_note, or shop: zero)"
                )
            parts.append("%s.%s" % (app, mig))
        return "+".join(parts)
    if isinstance(target, bool) or not isinstance(target, (str, int)):
        raise ManifestError(
            "database.target_revision must be the previous release's revision as text%s"
            % (" or a mapping of app to migration" if kind.per_app else "")
        )
    if isinstance(target, int) and not kind.numeric:
        # YAML reads an unquoted 0001 as the number 1 (and 0010 as 8): the revision id would be lost.
        raise ManifestError(
            "database.target_revision %r was read as a number, not a revision id: quote it "
            '(target_revision: "0001")' % (target,)
        )
    return str(target)


def _db_settings(settings, kind):
    """The tool's own settings, only the keys the tool takes."""
    if settings is None:
        return {}
    if not isinstance(settings, dict):
        raise ManifestError("database.settings must be a mapping of the tool's settings")
    problem = kind.settings_problem(settings, "database.settings")
    if problem:
        raise ManifestError(problem)
    return dict(settings)


def check_version(value, what="version"):
    """Return ``value`` if it is a safe release name (``names.check_version``), else raise ManifestError."""
    try:
        return _release_names.check_version(value, what)
    except _release_names.NameRuleError as exc:
        raise ManifestError(str(exc)) from None


def _short(value):
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."


def _mapping(value, where):
    if not isinstance(value, dict):
        raise ManifestError("%s must be a mapping (key: value lines), not %s" % (where, type(value).__name__))
    return value


def _string(section, key, where, required=True):
    value = section.get(key)
    if value is None:
        if required:
            raise ManifestError("%s.%s is missing: add it to the manifest" % (where, key))
        return None
    if not isinstance(value, str) or not value.strip() or "\n" in value or "\x00" in value:
        raise ManifestError("%s.%s must be a one-line string, not %s" % (where, key, _short(value)))
    return value


def _abs_path(section, key, where, required=True):
    value = _string(section, key, where, required)
    if value is None:
        return None
    if not value.startswith("/"):
        raise ManifestError("%s.%s must be an absolute path, not %r" % (where, key, _short(value)))
    if "/../" in value + "/":
        raise ManifestError("%s.%s must not contain '..': give the real path" % (where, key))
    return value


def _names(section, key):
    value = section.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) and _NAME_RE.match(v) for v in value):
        raise ManifestError("database.%s must be a list of table names" % key)
    return list(value)


def _assertions(section):
    value = section.get("assertions") or []
    if not isinstance(value, list):
        raise ManifestError("database.assertions must be a list of {name, sql, expect} checks")
    out = []
    for i, item in enumerate(value):
        where = "database.assertions[%d]" % i
        item = _mapping(item, where)
        sql = item.get("sql")
        if not isinstance(sql, str) or not sql.strip():
            raise ManifestError("%s.sql must be an SQL query whose first value is checked" % where)
        expect = item.get("expect", True)
        if not isinstance(expect, (str, int, float, bool)):
            raise ManifestError("%s.expect must be a value (compared as text) or true" % where)
        out.append({"name": str(item.get("name") or sql.strip()), "sql": sql, "expect": expect})
    return out


def parse_manifest(data):
    """Validate and normalise a manifest.

    ``data`` is either the manifest mapping or a mapping with a single ``rollback_manifest`` key
    (the file form, usable with ``ansible-playbook -e @manifest.yml``).
    """
    if data is None:
        return _normalise({})
    data = _mapping(data, "the manifest")
    if "rollback_manifest" in data:
        data = _mapping(data["rollback_manifest"], "rollback_manifest")
    try:
        checked = _schema.validate(data)
        _schema.check_keys(checked)
        out = _normalise(data)
        _schema.check_types(checked)
    except _schema.SchemaError as exc:
        raise ManifestError(str(exc)) from None
    return out


def _normalise(data):
    out = {
        "app": data.get("app") or "app",
        "environment": data.get("environment") or None,
        "version": None,
        "previous_version": None,
        "reason": data.get("reason") or "not given",
        "flags": None,
        "database": None,
        "infrastructure": None,
        "validation": {
            "retries": 20,
            "delay": 0.5,
            "timeout": 5,
            "smoke": [],
            "prometheus": None,
            "alertmanager": None,
        },
    }
    if not isinstance(out["app"], str) or not _NAME_RE.match(out["app"]):
        raise ManifestError("app %r is not a name: use letters, digits, '.', '_', ':' or '-'" % _short(out["app"]))
    environment = out["environment"]
    if environment is not None and not (isinstance(environment, str) and _NAME_RE.match(environment)):
        raise ManifestError(
            "environment %r is not a name: use letters, digits, '.', '_', ':' or '-' (e.g. production)"
            % _short(environment)
        )
    if not isinstance(out["reason"], str) or len(out["reason"]) > 2000:
        raise ManifestError("reason must be a string of at most 2000 characters")
    for key in ("version", "previous_version"):
        if data.get(key) is not None:
            out[key] = check_version(str(data[key]) if isinstance(data[key], (int, float)) else data[key], key)

    if data.get("flags") is not None:
        out["flags"] = _flags(data["flags"])

    if data.get("database") is not None:
        db = _mapping(data["database"], "database")
        tool = db.get("tool", "alembic")
        kind = _db_tools.get(tool) if isinstance(tool, str) else None
        if kind is None:
            raise ManifestError(
                "database.tool %r is not supported: use one of %s" % (_short(tool), ", ".join(DB_TOOLS))
            )
        target = _db_target(db.get("target_revision"), kind)
        settings = _db_settings(db.get("settings"), kind)
        url_env = _string(db, "url_env", "database", required=False)
        if url_env is not None and not _ENV_NAME_RE.match(url_env):
            raise ManifestError("database.url_env must name an environment variable, not %r" % _short(url_env))
        out["database"] = {
            "tool": tool,
            # alembic: the application's alembic.ini; the others: the migrations or application directory.
            "config": _abs_path(db, "config", "database", required=kind.needs == "config"),
            "migrations": _abs_path(db, "migrations", "database", required=kind.needs == "migrations"),
            "settings": settings,
            "registry": _string(db, "registry", "database", required=False),
            # The URL may instead come from the inventory or Vault (rollback_db_url) or the environment.
            "url": _string(db, "url", "database", required=False),
            # The variable the application's env.py reads its URL from (besides DATABASE_URL).
            "url_env": url_env,
            "target_revision": check_version(target, "database.target_revision"),
            "python": _abs_path(db, "python", "database", required=False),
            "backup_dir": _abs_path(db, "backup_dir", "database", required=False),
            "critical_tables": _names(db, "critical_tables"),
            "assertions": _assertions(db),
        }

    if data.get("infrastructure") is not None:
        out["infrastructure"] = _infrastructure(_mapping(data["infrastructure"], "infrastructure"))

    if data.get("validation") is not None:
        val = _mapping(data["validation"], "validation")
        for key, kind, lo, hi in (
            ("retries", int, 1, 1000),
            ("delay", (int, float), 0, 60),
            ("timeout", (int, float), 0.1, 300),
        ):
            if key in val:
                value = val[key]
                if isinstance(value, bool) or not isinstance(value, kind) or not lo <= value <= hi:
                    raise ManifestError("validation.%s must be a number from %s to %s" % (key, lo, hi))
                out["validation"][key] = value
        out["validation"]["smoke"] = _smoke(val.get("smoke", []))
        if val.get("prometheus") is not None:
            out["validation"]["prometheus"] = _prometheus(_mapping(val["prometheus"], "validation.prometheus"))
        if val.get("alertmanager") is not None:
            out["validation"]["alertmanager"] = _alertmanager(
                _mapping(val["alertmanager"], "validation.alertmanager"), out["app"]
            )
    try:
        # Only when given: a manifest without them reads (and is bound) as it always did.
        if data.get("manual_steps"):
            out["manual_steps"] = _manual.normalise_steps(data.get("manual_steps"))
    except ValueError as exc:
        raise ManifestError(str(exc)) from None
    runbook = data.get("runbook")
    if runbook is not None:
        runbook = _mapping(runbook, "runbook")
        layers = runbook.get("layers") or []
        if not isinstance(layers, list) or any(layer not in _manual.LAYERS for layer in layers):
            raise ManifestError("runbook.layers must list layers among %s" % ", ".join(_manual.LAYERS))
        out["runbook"] = {
            "name": str(runbook.get("name") or "runbook"),
            "file": str(runbook.get("file") or ""),
            "layers": list(layers),
            "with_manifest": bool(runbook.get("with_manifest")),
        }
    try:
        out["notify"] = _notify.parse_notify(data.get("notify"))
        out["rca"] = _rca.parse_rca(data.get("rca"))
    except _notify.ConfigError as exc:
        raise ManifestError(str(exc)) from None
    return out


def _url(section, key, where, required=True):
    value = _string(section, key, where, required)
    if value is not None and not value.startswith(("http://", "https://")):
        raise ManifestError("%s.%s must be an http:// or https:// URL, not %r" % (where, key, _short(value)))
    if value is not None and re.match(r"^https?://[^/@]*@", value):
        raise ManifestError("%s.%s must not carry credentials: name the token's variable with token_env" % (where, key))
    return value


def _http_call(section, where, read):
    section = _mapping(section, where)
    url = _url(section, "url", where)
    if "{token}" in url:
        raise ManifestError("%s.url must not contain {token}: put the token in a header" % where)
    method = str(section.get("method") or ("GET" if read else "POST")).upper()
    if method not in _HTTP_METHODS:
        raise ManifestError("%s.method must be one of %s" % (where, ", ".join(_HTTP_METHODS)))
    headers = _mapping(section.get("headers") or {}, where + ".headers")
    for name, value in headers.items():
        if not isinstance(value, str) or "\n" in value:
            raise ManifestError("%s.headers.%s must be a one-line string" % (where, name))
    out = {"method": method, "url": url, "headers": dict(headers)}
    if read:
        field = section.get("field", "enabled")
        if not isinstance(field, str) or not field:
            raise ManifestError("%s.field must be a dotted path into the JSON answer, e.g. data.enabled" % where)
        out["field"] = field
        out["off_value"] = section.get("off_value", False)
    else:
        body = section.get("body")
        if body is not None and "{token}" in str(body):
            raise ManifestError("%s.body must not contain {token}: put the token in a header" % where)
        out["body"] = body
        status = section.get("status")
        if status is not None:
            status = [status] if isinstance(status, int) else status
            if not isinstance(status, list) or not all(
                isinstance(c, int) and not isinstance(c, bool) and 100 <= c <= 599 for c in status
            ):
                raise ManifestError("%s.status must be an HTTP status code or a list of them" % where)
        out["status"] = status
    return out


def _flags(section):
    """The flags section: which flag system holds the release's flags, and which flags they are."""
    flags = _mapping(section, "flags")
    backend = flags.get("backend", "flagd")
    if backend not in FLAG_BACKENDS:
        raise ManifestError(
            "flags.backend %r is not supported: use one of %s" % (_short(backend), ", ".join(FLAG_BACKENDS))
        )
    unknown = sorted(set(flags) - {"backend", "names"} - set(_FLAG_KEYS[backend]))
    if unknown:
        raise ManifestError(
            "unknown key flags.%s for backend %s: the keys are %s"
            % (unknown[0], backend, ", ".join(("backend", "names", *_FLAG_KEYS[backend])))
        )
    names = flags.get("names")
    if not isinstance(names, list) or not names:
        raise ManifestError("flags.names must be a non-empty list of the release's flag names")
    for name in names:
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ManifestError(
                "flag name %r is not a flag key: use letters, digits, '.', '_', ':' or '-'" % _short(name)
            )
    if len(set(names)) != len(names):
        raise ManifestError("flags.names lists a flag twice: list each flag once")
    out = {"backend": backend, "names": list(names), "file": None}
    for key in _FLAG_REQUIRED[backend]:
        if flags.get(key) in (None, ""):
            raise ManifestError("flags.%s is missing: backend %s needs it" % (key, backend))
    if backend == "flagd":
        out["file"] = _abs_path(flags, "file", "flags")
        return out
    if "url" in _FLAG_KEYS[backend]:
        out["url"] = _url(flags, "url", "flags", required=False)
    for key in ("project", "environment"):
        if key in _FLAG_KEYS[backend]:
            out[key] = _string(flags, key, "flags", required=False)
    if backend == "unleash":
        out["project"] = out["project"] or "default"
    token_env = flags.get("token_env")
    if token_env is not None and (not isinstance(token_env, str) or not _ENV_NAME_RE.match(token_env)):
        raise ManifestError("flags.token_env must be the name of an environment variable, e.g. UNLEASH_ADMIN_TOKEN")
    out["token_env"] = token_env
    timeout = flags.get("timeout", 10)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0.1 <= timeout <= 300:
        raise ManifestError("flags.timeout must be a number of seconds from 0.1 to 300")
    out["timeout"] = timeout
    validate = flags.get("validate_certs", True)
    if not isinstance(validate, bool):
        raise ManifestError("flags.validate_certs must be true or false")
    out["validate_certs"] = validate
    if backend == "http":
        out["request"] = _http_call(flags["request"], "flags.request", read=False)
        out["read_back"] = _http_call(flags["read_back"], "flags.read_back", read=True)
    return out


def _http_url(section, key, where, required=True, credentials=True):
    url = _string(section, key, where, required)
    if url is not None and not url.startswith(("http://", "https://")):
        raise ManifestError("%s.%s must be an http:// or https:// URL, not %r" % (where, key, _short(url)))
    if url is not None and not credentials and "@" in url.split("/")[2]:
        # The manifest lands in the plan and the stage's events: no secrets in it.
        raise ManifestError(
            "%s.%s must not carry a user or password: the manifest is recorded in the plan" % (where, key)
        )
    return url


def _number(section, key, where, lo, hi, default, kind=(int, float)):
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, kind) or not lo <= value <= hi:
        raise ManifestError("%s.%s must be a number from %s to %s" % (where, key, lo, hi))
    return value


def _versioned_path(section, key, where):
    """An absolute path that may contain {version} (the release being rolled back to)."""
    return _abs_path(section, key, where)


def _infrastructure(infra):
    kind = infra.get("kind", "config_file")
    if kind not in INFRA_KINDS:
        raise ManifestError(
            "infrastructure.kind %r is not supported: use one of %s" % (_short(kind), ", ".join(INFRA_KINDS))
        )
    where = "infrastructure"
    if kind == "terraform":
        binary = infra.get("binary", "terraform")
        if not isinstance(binary, str) or not re.match(r"^(/[^\s]+|[A-Za-z0-9._-]+)$", binary):
            raise ManifestError("infrastructure.binary must be a command name (terraform, tofu) or an absolute path")
        workspace = infra.get("workspace")
        if workspace is not None and (not isinstance(workspace, str) or not _NAME_RE.match(workspace)):
            raise ManifestError("infrastructure.workspace must be a workspace name")
        init = infra.get("init", True)
        if not isinstance(init, bool):
            raise ManifestError("infrastructure.init must be true or false")
        return {
            "kind": kind,
            "project_path": _versioned_path(infra, "project_path", where),
            "binary": binary,
            "workspace": workspace,
            "init": init,
        }
    if kind == "tasks":
        return {"kind": kind, "file": _versioned_path(infra, "file", where)}
    snapshot = _abs_path(infra, "snapshot", where)
    if "{version}" not in snapshot:
        raise ManifestError("infrastructure.snapshot must contain {version}, e.g. /etc/lb/releases/{version}.conf")
    return {
        "kind": kind,
        "path": _abs_path(infra, "path", where),
        "snapshot": snapshot,
        "validate_command": _string(infra, "validate_command", where, required=False),
        "reload_command": _string(infra, "reload_command", where, required=False),
        "verify_url": _http_url(infra, "verify_url", where, required=False, credentials=False),
        "verify_contains": _string(infra, "verify_contains", where, required=False),
    }


def _smoke(smoke):
    if not isinstance(smoke, list):
        raise ManifestError("validation.smoke must be a list of {url, status} or {command, timeout} checks")
    out = []
    for i, check in enumerate(smoke):
        where = "validation.smoke[%d]" % i
        check = _mapping(check, where)
        timeout = _number(check, "timeout", where, 0.1, 3600, 30)
        if "command" in check:
            command = check["command"]
            if isinstance(command, list):
                if not command or not all(isinstance(a, str) and "\x00" not in a for a in command):
                    raise ManifestError("%s.command must be a non-empty list of strings" % where)
            else:
                command = _string(check, "command", where)
            out.append({"command": command, "timeout": timeout, "name": check.get("name") or str(command)[:80]})
            continue
        url = _http_url(check, "url", where)
        status = check.get("status", 200)
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise ManifestError("%s.status must be an HTTP status code" % where)
        out.append({"url": url, "status": status, "timeout": timeout, "name": check.get("name") or url})
    return out


def _prometheus(prom):
    where = "validation.prometheus"
    queries = prom.get("queries")
    if not isinstance(queries, list) or not queries:
        raise ManifestError("validation.prometheus.queries must be a non-empty list of {name, query, max or min}")
    checks = []
    for i, q in enumerate(queries):
        qw = "%s.queries[%d]" % (where, i)
        q = _mapping(q, qw)
        query = _string(q, "query", qw)
        bounds = [k for k in ("max", "min") if k in q]
        if len(bounds) != 1:
            raise ManifestError("%s needs exactly one threshold: max (value must stay at or below) or min" % qw)
        threshold = q[bounds[0]]
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            raise ManifestError("%s.%s must be a number" % (qw, bounds[0]))
        empty = q.get("empty", "fail")
        if empty not in ("fail", "pass"):
            raise ManifestError("%s.empty must be fail or pass (what a query without data means)" % qw)
        checks.append({"name": q.get("name") or query[:80], "query": query, bounds[0]: threshold, "empty": empty})
    return {
        "url": _http_url(prom, "url", where, credentials=False).rstrip("/"),
        "queries": checks,
        "retries": _number(prom, "retries", where, 1, 1000, 1, int),
        "delay": _number(prom, "delay", where, 0, 300, 5),
    }


def _alertmanager(am, app):
    where = "validation.alertmanager"
    matchers = am.get("matchers", ['service="%s"' % app])
    if not isinstance(matchers, list) or not matchers:
        raise ManifestError("validation.alertmanager.matchers must be a list like ['service=\"shop\"']")
    for m in matchers:
        if not isinstance(m, str) or not re.match(r'^\s*[A-Za-z_][A-Za-z0-9_]*\s*(=|!=|=~|!~)\s*".*"\s*$', m):
            raise ManifestError('validation.alertmanager matcher %r is not label="value" (or !=, =~, !~)' % _short(m))
    return {
        "url": _http_url(am, "url", where, credentials=False).rstrip("/"),
        "matchers": list(matchers),
        "retries": _number(am, "retries", where, 1, 1000, 1, int),
        "delay": _number(am, "delay", where, 0, 300, 5),
    }
