# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The root-cause analysis ticket: Jira (REST v2 and Cloud v3), GitHub issues, or a generic webhook.

A tracker that cannot be reached never fails the rollback: the record says ``pending`` and
``release-rollback rca RUN_DIR`` files it later. Pure Python, standard library only.
"""

from __future__ import annotations

import base64
import json
import re
from datetime import datetime, timezone

from ansible_collections.release.rollback.plugins.module_utils import notify as _notify

TRACKERS = ("jira", "github", "webhook")
_REPO_RE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_KEY_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,31}$")


def parse_rca(data):
    """Check the manifest's ``rca`` section; returns the normalised tracker config or None."""
    if data is None:
        return None
    if not isinstance(data, dict):
        raise _notify.ConfigError("rca must be a mapping with kind: jira, github or webhook")
    kind = data.get("kind")
    if kind not in TRACKERS:
        raise _notify.ConfigError("rca.kind must be one of %s" % ", ".join(TRACKERS))
    labels = data.get("labels", ["rollback", "rca"])
    if not isinstance(labels, list) or any(not isinstance(x, str) or not x or " " in x for x in labels):
        raise _notify.ConfigError("rca.labels must be a list of words")
    out = {"kind": kind, "labels": labels, "token_env": _notify._env_name(data, "token_env", "rca")}
    if kind == "jira":
        out["url"] = _notify._url(data, "url", "rca")
        if not out["url"]:
            raise _notify.ConfigError("rca.url is missing: give the Jira base URL, e.g. https://jira.example.com")
        api = data.get("api", 2)
        if api not in (2, 3):
            raise _notify.ConfigError("rca.api must be 2 (Jira Server/Data Center) or 3 (Jira Cloud)")
        project = data.get("project")
        if not isinstance(project, str) or not _KEY_RE.match(project):
            raise _notify.ConfigError("rca.project must be a Jira project key such as OPS")
        issue_type = data.get("issue_type", "Task")
        if not isinstance(issue_type, str) or not issue_type.strip():
            raise _notify.ConfigError("rca.issue_type must name a Jira issue type")
        out.update(
            {
                "api": api,
                "project": project,
                "issue_type": issue_type,
                "user_env": _notify._env_name(data, "user_env", "rca"),
            }
        )
        if not out["token_env"]:
            raise _notify.ConfigError("rca.token_env is missing: name the variable that holds the Jira API token")
    elif kind == "github":
        repo = data.get("repo")
        if not isinstance(repo, str) or not _REPO_RE.match(repo):
            raise _notify.ConfigError("rca.repo must be OWNER/REPOSITORY")
        out["repo"] = repo
        out["api_url"] = _notify._url(data, "api_url", "rca") or "https://api.github.com"
        if not out["token_env"]:
            raise _notify.ConfigError("rca.token_env is missing: name the variable that holds the GitHub token")
    else:
        out["url"] = _notify._url(data, "url", "rca")
        out["url_env"] = _notify._env_name(data, "url_env", "rca")
        if not out["url"] and not out["url_env"]:
            raise _notify.ConfigError("rca needs url (or url_env naming the variable that holds it)")
    return out


def ticket(rep, link):
    """Summary and description lines of the RCA ticket."""
    rep = rep or {}
    summary = "RCA: %s release %s rolled back to %s (%s)" % (
        rep.get("app"),
        rep.get("from_version"),
        rep.get("to_version"),
        rep.get("exit_state"),
    )
    appr = rep.get("approval") or {}
    lines = [
        "Root-cause analysis for the rollback of %s release %s." % (rep.get("app"), rep.get("from_version")),
        "",
        "Reason for the rollback: %s" % rep.get("reason"),
        "Exit state: %s" % rep.get("exit_state"),
        "Rolled back to: %s (previous known-good release)" % rep.get("to_version"),
        "Run: %s" % rep.get("run_id"),
        "Plan hash: %s, approved by %s at %s" % (rep.get("plan_hash"), appr.get("approver"), appr.get("time")),
        "Report: %s" % link,
    ]
    gaps = rep.get("known_limitations") or []
    if gaps:
        lines += ["", "Gaps this RCA must cover (the rollback did not finish these):"]
        lines += ["- %s" % g for g in gaps]
    lines += ["", "Stages:"]
    for step in rep.get("steps") or []:
        lines.append("- %s: %s (%s)" % (step["stage"], step["status"], step.get("done") or step.get("summary")))
    return summary, lines


def _adf(lines):
    """Atlassian Document Format for Jira Cloud's v3 API: one paragraph per block of lines."""
    content = []
    bullets = []
    for line in lines + [""]:
        if line.startswith("- "):
            paragraph = {"type": "paragraph", "content": [{"type": "text", "text": line[2:]}]}
            bullets.append({"type": "listItem", "content": [paragraph]})
            continue
        if bullets:
            content.append({"type": "bulletList", "content": bullets})
            bullets = []
        if line:
            content.append({"type": "paragraph", "content": [{"type": "text", "text": line}]})
    return {"type": "doc", "version": 1, "content": content}


def _jira(cfg, rep, link, secrets):
    summary, lines = ticket(rep, link)
    fields = {
        "project": {"key": cfg["project"]},
        "summary": summary,
        "issuetype": {"name": cfg["issue_type"]},
        "labels": cfg["labels"],
        "description": "\n".join(lines) if cfg["api"] == 2 else _adf(lines),
    }
    token = _notify.secret(cfg["token_env"], secrets)
    if not token:
        raise OSError("the Jira token is not set: export %s" % cfg["token_env"])
    user = _notify.secret(cfg.get("user_env"), secrets)
    if user:
        auth = "Basic " + base64.b64encode(("%s:%s" % (user, token)).encode("utf-8")).decode("ascii")
    else:
        auth = "Bearer " + token
    url = "%s/rest/api/%d/issue" % (cfg["url"].rstrip("/"), cfg["api"])
    status, text = _notify.http_json(url, {"fields": fields}, {"Authorization": auth, "Accept": "application/json"})
    if status != 201:
        raise OSError("Jira answered HTTP %s: %s" % (status, _jira_error(text)))
    key = json.loads(text)["key"]
    return key, "%s/browse/%s" % (cfg["url"].rstrip("/"), key), [token, user]


def _jira_error(text):
    try:
        body = json.loads(text)
        parts = list(body.get("errorMessages") or []) + ["%s: %s" % kv for kv in (body.get("errors") or {}).items()]
        return "; ".join(parts) or text[:200]
    except (ValueError, AttributeError):
        return text.strip()[:200]


def _github(cfg, rep, link, secrets):
    summary, lines = ticket(rep, link)
    token = _notify.secret(cfg["token_env"], secrets)
    if not token:
        raise OSError("the GitHub token is not set: export %s" % cfg["token_env"])
    url = "%s/repos/%s/issues" % (cfg["api_url"].rstrip("/"), cfg["repo"])
    headers = {
        "Authorization": "Bearer " + token,
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
    }
    issue = {"title": summary, "body": "\n".join(lines), "labels": cfg["labels"]}
    status, text = _notify.http_json(url, issue, headers)
    if status != 201:
        try:
            why = json.loads(text).get("message") or text[:200]
        except (ValueError, AttributeError):
            why = text.strip()[:200]
        raise OSError("GitHub answered HTTP %s: %s" % (status, why))
    body = json.loads(text)
    return "%s#%s" % (cfg["repo"], body["number"]), body["html_url"], [token]


def _webhook(cfg, rep, link, secrets):
    summary, lines = ticket(rep, link)
    url = cfg.get("url") or _notify.secret(cfg.get("url_env"), secrets)
    if not url:
        raise OSError("the RCA webhook URL is not set: export %s" % cfg.get("url_env"))
    token = _notify.secret(cfg.get("token_env"), secrets)
    headers = {"Authorization": "Bearer " + token} if token else {}
    body = {
        "source": "release-rollback",
        "summary": summary,
        "description": "\n".join(lines),
        "labels": cfg["labels"],
        "run_id": rep.get("run_id"),
        "exit_state": rep.get("exit_state"),
        "gaps": rep.get("known_limitations") or [],
        "report_url": link,
    }
    status, text = _notify.http_json(url, body, headers)
    if not 200 <= status < 300:
        raise OSError("the RCA webhook answered HTTP %s: %s" % (status, text.strip()[:200]))
    try:
        answer = json.loads(text) if text.strip() else {}
    except ValueError:
        answer = {}
    answer = answer if isinstance(answer, dict) else {}
    return str(answer.get("key") or answer.get("id") or rep.get("run_id")), answer.get("url") or link, [url, token]


_FILERS = {"jira": _jira, "github": _github, "webhook": _webhook}


def file_ticket(cfg, rep, link, secrets=None, previous=None):
    """File the ticket; never raises. Returns the RCA record for rca.json, the report and the audit trail."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    attempts = int((previous or {}).get("attempts") or 0) + 1
    try:
        key, url, _used = _FILERS[cfg["kind"]](cfg, rep, link, secrets)
    except (OSError, ValueError, KeyError) as exc:
        known = [_notify.secret(cfg.get(k), secrets) for k in ("token_env", "user_env", "url_env")]
        return {
            "status": "pending",
            "tracker": cfg["kind"],
            "error": _notify.redact(exc, known),
            "time": now,
            "attempts": attempts,
        }
    return {"status": "filed", "tracker": cfg["kind"], "key": key, "url": url, "time": now, "attempts": attempts}
