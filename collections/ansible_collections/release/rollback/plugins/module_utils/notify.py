# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Stakeholder notifications: Slack incoming webhook, e-mail over SMTP, generic webhook.

One implementation for the driver and the report stage. Pure Python, standard library only.
Secrets (webhook URLs with tokens, passwords, API tokens) are never in the configuration: it names
the environment variable (or Ansible Vault-backed ``secrets`` entry) that holds each one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import smtplib
import ssl
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from urllib.error import HTTPError
from urllib.parse import urlsplit

# What a notification is about.
STARTED = "started"
COMPLETED = "completed"
PARTIAL = "partially completed"
BLOCKED = "blocked"
ABORTED = "aborted"
RCA_INITIATED = "rca initiated"
# An event trigger (docs/eda.md) planned a rollback that waits for a person's approval.
APPROVAL_REQUESTED = "approval requested"
EVENTS = (STARTED, COMPLETED, PARTIAL, BLOCKED, ABORTED, RCA_INITIATED, APPROVAL_REQUESTED)
CHANNEL_KINDS = ("slack", "email", "webhook")

_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_ADDR_RE = re.compile(r"^[^@\s,<>]+@[^@\s,<>]+$")

HEADLINES = {
    STARTED: "Rollback started",
    COMPLETED: "Rollback completed",
    PARTIAL: "Rollback partially completed",
    BLOCKED: "Rollback blocked",
    ABORTED: "Rollback aborted",
    RCA_INITIATED: "RCA initiated",
    APPROVAL_REQUESTED: "Rollback planned, approval requested",
}


class ConfigError(ValueError):
    """A notify/rca section that cannot be used; one sentence with the fix."""


# ----------------------------------------------------------------------------------- configuration
def _env_name(section, key, where, required=False):
    value = section.get(key)
    if value is None:
        if required:
            raise ConfigError("%s.%s is missing: name the environment variable that holds the secret" % (where, key))
        return None
    if not isinstance(value, str) or not _ENV_RE.match(value):
        raise ConfigError("%s.%s must be an environment variable name such as MY_TOKEN" % (where, key))
    return value


def _url(section, key, where):
    value = section.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith(("http://", "https://")) or any(c.isspace() for c in value):
        raise ConfigError("%s.%s must be an http:// or https:// URL" % (where, key))
    if urlsplit(value).username or urlsplit(value).password:
        raise ConfigError("%s.%s must not hold credentials: put them in an environment variable" % (where, key))
    return value


def parse_notify(data):
    """Check the manifest's ``notify`` section; returns ``{"report_url": ..., "channels": [...]}``."""
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ConfigError("notify must be a mapping with a channels list")
    report_url = data.get("report_url")
    if report_url is not None and (not isinstance(report_url, str) or "\n" in report_url):
        raise ConfigError("notify.report_url must be a one-line URL template (it may use {run_id})")
    channels = data.get("channels") or []
    if not isinstance(channels, list):
        raise ConfigError("notify.channels must be a list of channels")
    out = []
    for i, ch in enumerate(channels):
        where = "notify.channels[%d]" % i
        if not isinstance(ch, dict):
            raise ConfigError("%s must be a mapping" % where)
        kind = ch.get("kind")
        if kind not in CHANNEL_KINDS:
            raise ConfigError("%s.kind must be one of %s" % (where, ", ".join(CHANNEL_KINDS)))
        events = ch.get("events") or list(EVENTS)
        if not isinstance(events, list) or any(e not in EVENTS for e in events):
            raise ConfigError("%s.events must list some of: %s" % (where, ", ".join(EVENTS)))
        entry = {"kind": kind, "events": list(events), "name": str(ch.get("name") or kind)}
        if kind == "slack":
            if "url" in ch:
                raise ConfigError(
                    "%s: a Slack webhook URL is a secret; put it in an environment variable and name it in url_env"
                    % where
                )
            entry["url_env"] = _env_name(ch, "url_env", where, required=True)
        elif kind == "webhook":
            entry["url"] = _url(ch, "url", where)
            entry["url_env"] = _env_name(ch, "url_env", where)
            if not entry["url"] and not entry["url_env"]:
                raise ConfigError("%s needs url (or url_env naming the variable that holds it)" % where)
            entry["token_env"] = _env_name(ch, "token_env", where)
        else:
            host = ch.get("host")
            if not isinstance(host, str) or not host or any(c.isspace() for c in host):
                raise ConfigError("%s.host must be the SMTP server's name" % where)
            port = ch.get("port", 25)
            if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
                raise ConfigError("%s.port must be a TCP port number" % where)
            sender = ch.get("from")
            to = ch.get("to")
            to = [to] if isinstance(to, str) else to
            if not isinstance(sender, str) or not _ADDR_RE.match(sender):
                raise ConfigError("%s.from must be an e-mail address" % where)
            if not isinstance(to, list) or not to or any(not isinstance(a, str) or not _ADDR_RE.match(a) for a in to):
                raise ConfigError("%s.to must be a list of e-mail addresses" % where)
            tls = ch.get("tls", "none")
            if tls not in ("none", "starttls", "ssl"):
                raise ConfigError("%s.tls must be none, starttls or ssl" % where)
            entry.update(
                {
                    "host": host,
                    "port": port,
                    "from": sender,
                    "to": list(to),
                    "tls": tls,
                    "username_env": _env_name(ch, "username_env", where),
                    "password_env": _env_name(ch, "password_env", where),
                }
            )
        out.append(entry)
    return {"report_url": report_url, "channels": out}


def secret(name, secrets=None):
    """The secret held in ``name``: from ``secrets`` (e.g. Ansible Vault vars) or the environment."""
    if not name:
        return None
    if secrets and secrets.get(name):
        return secrets[name]
    return os.environ.get(name) or None


def redact(text, values):
    """``text`` with every secret value in ``values`` replaced by ``***``."""
    text = str(text)
    for value in values:
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return text


# ----------------------------------------------------------------------------------------- message
def report_link(config, run_id, run_dir):
    template = (config or {}).get("report_url")
    if template:
        return template.replace("{run_id}", str(run_id))
    return "file://" + os.path.join(os.path.abspath(run_dir), "report.html")


def required_action(event, rep):
    if event == STARTED:
        return "None yet: follow the run; the next message says how it ended."
    if event == COMPLETED:
        signoff = [s for s in (rep or {}).get("next_steps") or [] if s.startswith("`release-rollback signoff")]
        return "Watch the service's monitoring, then sign off: %s." % (
            signoff[0] if signoff else "`release-rollback signoff RUN_DIR --by NAME`"
        )
    if event == RCA_INITIATED:
        return "Start the root-cause analysis in the ticket."
    if event == APPROVAL_REQUESTED:
        ask = (rep or {}).get("approval_request") or {}
        return (
            "Read the plan (%s); nothing changes until a person approves it. "
            "To approve exactly this plan and run it: %s"
            % (
                ask.get("plan_file"),
                ask.get("approve_command"),
            )
        )
    steps = list((rep or {}).get("next_steps") or [])
    return " ".join(steps) or "Read the report."


def message(event, rep, link, rca=None):
    """The notification as data: subject, text and the fields every channel carries."""
    rep = rep or {}
    if event not in EVENTS:
        raise ValueError("unknown notification event %r" % event)
    what = "%s %s -> %s" % (rep.get("app"), rep.get("from_version"), rep.get("to_version"))
    subject = "%s: %s" % (HEADLINES[event], what)
    reason = rep.get("reason") or "not given"
    if event in (BLOCKED, ABORTED, PARTIAL) and rep.get("known_limitations"):
        reason = "%s. %s" % (reason, "; ".join(rep["known_limitations"]))
    action = required_action(event, rep)
    lines = [subject, "Run: %s" % rep.get("run_id"), "Reason: %s" % reason, "Required action: %s" % action]
    if event == RCA_INITIATED and rca:
        lines.append("Ticket: %s %s" % (rca.get("key"), rca.get("url")))
    ask = rep.get("approval_request") or {}
    if event == APPROVAL_REQUESTED:
        lines.append("Trigger: %s" % ask.get("trigger"))
        lines += ["Plan:"] + ["- %s" % step for step in ask.get("steps") or []]
        for why in ask.get("not_automatic") or []:
            lines.append("Not pre-approved: %s" % why)
    approval = rep.get("approval") or {}
    if event != APPROVAL_REQUESTED and approval.get("approver"):
        policy = approval.get("policy") or {}
        lines.append(
            "Approved by: %s%s"
            % (
                approval["approver"],
                " (standard change: policy sha256 %s, trigger %s)"
                % (policy.get("sha256"), (approval.get("trigger") or {}).get("summary"))
                if policy
                else "",
            )
        )
    if event != STARTED and rep.get("digest"):
        # What each stage did, as the report model words it.
        lines += ["What was done:"] + ["- %s" % line for line in rep["digest"]]
    lines.append("Report: %s" % link)
    return {
        "event": event,
        "subject": subject,
        "text": "\n".join(lines),
        "run_id": rep.get("run_id"),
        "app": rep.get("app"),
        "from_version": rep.get("from_version"),
        "to_version": rep.get("to_version"),
        "exit_state": rep.get("exit_state"),
        "reason": reason,
        "required_action": action,
        "report_url": link,
        "rca": {"key": rca.get("key"), "url": rca.get("url")} if rca else None,
        "approver": approval.get("approver"),
        "approve_command": ask.get("approve_command") if event == APPROVAL_REQUESTED else None,
        "plan_file": ask.get("plan_file") if event == APPROVAL_REQUESTED else None,
    }


# ----------------------------------------------------------------------------------------- sending
def http_json(url, body, headers=None, timeout=10):
    """POST ``body`` as JSON. Returns ``(status, text)``; raises OSError on transport errors."""
    # Imported when something is sent: ansible's urls (and the TLS stack under it) is the largest import
    # of the driver's commands, most of which send nothing.
    from ansible.module_utils.urls import open_url

    data = json.dumps(body).encode("utf-8")
    all_headers = {"Content-Type": "application/json; charset=utf-8"}
    all_headers.update(headers or {})
    try:
        resp = open_url(
            url,
            data=data,
            headers=all_headers,
            method="POST",
            timeout=timeout,
            http_agent="release-rollback",
            use_netrc=False,
        )
        with resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def _slack(channel, msg, secrets):
    url = secret(channel["url_env"], secrets)
    if not url:
        raise OSError("the Slack webhook URL is not set: export %s" % channel["url_env"])
    body = {
        "text": msg["text"],
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": msg["subject"][:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": _slack_escape(msg["text"])}},
        ],
    }
    status, text = http_json(url, body)
    if status != 200:
        raise OSError("Slack answered HTTP %s: %s" % (status, text.strip()[:200]))
    return [url]


def _slack_escape(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _webhook(channel, msg, secrets):
    url = channel.get("url") or secret(channel.get("url_env"), secrets)
    if not url:
        raise OSError("the webhook URL is not set: export %s" % channel.get("url_env"))
    token = secret(channel.get("token_env"), secrets)
    if channel.get("token_env") and not token:
        raise OSError("the webhook token is not set: export %s" % channel["token_env"])
    headers = {"Authorization": "Bearer %s" % token} if token else {}
    status, text = http_json(url, dict(msg, source="release-rollback"), headers)
    if not 200 <= status < 300:
        raise OSError("the webhook answered HTTP %s: %s" % (status, text.strip()[:200]))
    return [url, token]


def _email(channel, msg, secrets):
    mail = EmailMessage()
    mail["Subject"] = msg["subject"]
    mail["From"] = channel["from"]
    mail["To"] = ", ".join(channel["to"])
    mail["Date"] = formatdate(localtime=False)
    mail["Message-ID"] = make_msgid(domain=channel["from"].split("@", 1)[1])
    mail["X-Rollback-Run"] = str(msg.get("run_id"))
    mail["X-Rollback-Event"] = msg["event"]
    mail.set_content(msg["text"] + "\n")
    user = secret(channel.get("username_env"), secrets)
    password = secret(channel.get("password_env"), secrets)
    if channel["tls"] == "ssl":
        server = smtplib.SMTP_SSL(channel["host"], channel["port"], timeout=15, context=ssl.create_default_context())
    else:
        server = smtplib.SMTP(channel["host"], channel["port"], timeout=15)
    try:
        if channel["tls"] == "starttls":
            server.starttls(context=ssl.create_default_context())
        if user and password:
            server.login(user, password)
        refused = server.send_message(mail)
    finally:
        with contextlib.suppress(OSError, smtplib.SMTPException):
            server.quit()
    if refused:
        raise OSError("the SMTP server refused %s" % ", ".join(sorted(refused)))
    return [user, password]


_SENDERS = {"slack": _slack, "webhook": _webhook, "email": _email}


def send(config, event, rep, run_dir, rca=None, secrets=None):
    """Send ``event`` on every configured channel that wants it; never raises.

    Returns one outcome per channel: ``{time, event, channel, outcome}`` with outcome ``sent`` or
    ``failed: <why>`` (secrets redacted), ready for the audit trail and the report.
    """
    if not config or not config.get("channels"):
        return []
    link = report_link(config, (rep or {}).get("run_id"), run_dir)
    msg = message(event, rep, link, rca)
    outcomes = []
    known = [secret(n, secrets) for ch in config["channels"] for k, n in ch.items() if k.endswith("_env")]
    for channel in config["channels"]:
        if event not in channel["events"]:
            continue
        try:
            _SENDERS[channel["kind"]](channel, msg, secrets)
            outcome = "sent"
        except (OSError, smtplib.SMTPException, ValueError) as exc:
            outcome = "failed: %s" % redact(exc, known)
        outcomes.append(
            {
                "time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "event": event,
                "channel": channel["name"],
                "kind": channel["kind"],
                "outcome": outcome,
            }
        )
    return outcomes
