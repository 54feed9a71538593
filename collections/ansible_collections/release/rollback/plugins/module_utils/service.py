# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restart an application with its service manager and verify its health and version.

Shared by the app_service module (restart and verify, or verify alone in the validate stage) and
the code_rollback module (switch, restart and verify one host in one round trip).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import shlex
import time
from urllib.parse import urlsplit

MANAGERS = ("auto", "command", "systemd", "supervisor", "none")

# The options of how an application is restarted and verified, shared by app_service and code_rollback.
SERVICE_ARGS = dict(
    manager=dict(type="str", default="auto", choices=list(MANAGERS)),
    service=dict(type="str"),
    supervisor_config=dict(type="path"),
    supervisorctl=dict(type="path", default="supervisorctl"),
    restart_command=dict(type="raw"),
    stop_command=dict(type="raw"),
    start_command=dict(type="raw"),
    health_url=dict(type="str"),
    version_url=dict(type="str"),
    retries=dict(type="int", default=20),
    delay=dict(type="float", default=0.5),
    timeout=dict(type="float", default=5),
)


def _get(url, timeout):
    """GET ``url`` without following redirects: (status code or None, body or the error).

    http.client rather than a full URL library: a module call per host per stage has to start fast,
    and a health check needs no cookies, proxies or redirects. Certificates are not verified (the
    health endpoint is usually reached by address, on the host itself).
    """
    try:
        parts = urlsplit(url)
        if parts.scheme == "https":
            import ssl

            conn = http.client.HTTPSConnection(
                parts.hostname, parts.port, timeout=timeout, context=ssl._create_unverified_context()
            )
        elif parts.scheme == "http":
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        else:
            return None, "unsupported URL scheme %r in %s" % (parts.scheme, url)
        try:
            headers = {}
            if parts.username is not None:  # http://user:password@host/health
                token = base64.b64encode(("%s:%s" % (parts.username, parts.password or "")).encode()).decode()
                headers["Authorization"] = "Basic " + token
            conn.request("GET", (parts.path or "/") + ("?" + parts.query if parts.query else ""), headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read(4096).decode("utf-8", "replace")
        finally:
            conn.close()
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return None, "%s: %s" % (type(exc).__name__, exc)


def _version_of(body):
    body = body.strip()
    try:
        data = json.loads(body)
        if isinstance(data, dict) and "version" in data:
            return str(data["version"])
    except ValueError:
        pass
    return body


def verify(p):
    """Poll health and version until both are right or the retries run out: (ok, health, version, attempts)."""
    health, version, attempts = None, None, 0
    for attempts in range(1, max(1, p["retries"]) + 1):
        ok = True
        if p["health_url"]:
            code, _body = _get(p["health_url"], p["timeout"])
            health = code if code else _body
            ok = isinstance(code, int) and 200 <= code < 300
        if p["version_url"]:  # asked even when unhealthy, so that a failure can name the running version
            code, body = _get(p["version_url"], p["timeout"])
            version = _version_of(body) if code == 200 else None
            ok = ok and code == 200 and (p["expect_version"] is None or version == p["expect_version"])
        if ok:
            return True, health, version, attempts
        time.sleep(p["delay"])
    return False, health, version, attempts


def _revision(app_root, rel):
    try:
        with open(os.path.join(app_root, rel, "REVISION"), encoding="utf-8", errors="replace") as fh:
            return fh.read(200).strip()
    except OSError:
        return None


def _argv(value):
    """A command given as a list, or as a string split the way a shell would (no shell runs it)."""
    if value is None or isinstance(value, list):
        return value
    return shlex.split(str(value))


def effective_manager(p):
    """The service manager ``auto`` stands for: ``command`` when a restart (or stop and start) command
    is set, ``systemd`` when a service name is, otherwise ``none`` (no restart, as ansistrano's own
    rollback does). Any other manager is taken as given."""
    manager = p.get("manager") or "auto"
    if manager != "auto":
        return manager
    if p.get("restart_command") or (p.get("stop_command") and p.get("start_command")):
        return "command"
    if p.get("service"):
        return "systemd"
    return "none"


def restart_commands(p):
    """The argument lists that restart the application with its manager, in order."""
    manager = effective_manager(p)
    if manager == "systemd":
        return [["systemctl", "restart", p["service"]]]
    if manager == "supervisor":
        ctl = [p["supervisorctl"]] + (["-c", p["supervisor_config"]] if p["supervisor_config"] else [])
        return [ctl + ["restart", p["service"]]]
    if manager == "command":
        if p["restart_command"]:
            return [_argv(p["restart_command"])]
        return [_argv(p["stop_command"]), _argv(p["start_command"])]
    return []


def argument_problem(p):
    """One sentence when the service options cannot work together, else None."""
    manager = effective_manager(p)
    if manager in ("systemd", "supervisor") and not p.get("service"):
        return "manager %s needs service (the unit or program name)" % manager
    if (
        p.get("restart", True)
        and manager == "command"
        and not p["restart_command"]
        and not (p["stop_command"] and p["start_command"])
    ):
        return "manager command needs restart_command, or stop_command and start_command"
    return None


def restart_and_verify(p, run_command, check_mode=False):
    """Restart (when asked and needed) and verify: (result, failure message or None).

    ``p`` holds the app_service options; ``run_command`` is AnsibleModule.run_command. With
    ``only_if_unhealthy`` the application is checked once first and restarted only when the check
    fails, so that a re-run restarts nothing that is already right.
    """
    restarted = False
    needed = p["restart"] and effective_manager(p) != "none"
    if needed and p["only_if_unhealthy"]:
        needed = not verify(dict(p, retries=1, delay=0))[0]
    if needed:
        if check_mode:
            return dict(changed=True, restarted=False, health=None, version=None, attempts=0), None
        for argv in restart_commands(p):
            rc, out, err = run_command(argv)
            # supervisorctl exits 0 on some failures (older versions): its output says ERROR then.
            if rc != 0 or (effective_manager(p) == "supervisor" and "ERROR" in (out + err)):
                failed = dict(changed=False, restarted=False, health=None, version=None, attempts=0)
                return failed, "%s failed with exit code %d: %s" % (" ".join(argv), rc, (err or out).strip()[-500:])
        restarted = True
    if check_mode:
        # Nothing was switched or restarted: what the host answers now is read once and reported, not judged.
        ok, health, version, attempts = verify(dict(p, retries=1, delay=0))
        return dict(
            changed=False, restarted=False, health=health, version=version, attempts=attempts, judged=False
        ), None
    ok, health, version, attempts = verify(p)
    result = dict(changed=restarted, restarted=restarted, health=health, version=version, attempts=attempts)
    if ok and not p["version_url"] and p["app_root"] and p["release"]:
        live, wanted = _revision(p["app_root"], "current"), _revision(p["app_root"], "releases/" + p["release"])
        result["revision"] = live
        if live != wanted:
            return result, "current/REVISION is %s, but release %s has REVISION %s" % (live, p["release"], wanted)
    if not ok:
        if p["expect_version"] and version is not None and version != p["expect_version"]:
            why = "reports version %s, expected %s" % (version, p["expect_version"])
            healthy = not p["health_url"] or (isinstance(health, int) and 200 <= health < 300)
            if not healthy:
                why += ", and is not healthy (last answer: %s)" % health
        else:
            why = "is not healthy (last answer: %s)" % health
        return result, "the application %s after %d attempt(s)" % (why, attempts)
    return result, None
