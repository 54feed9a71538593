#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: app_service
short_description: Restart an application and verify its health and version in one round trip
version_added: "0.1.0"
description:
  - Optionally restarts the application with its service manager, then polls its health URL and
    its version URL until the health check answers 2xx and the version equals O(expect_version),
    or the retries run out.
  - With O(restart=false) it only verifies; the validate stage uses it that way.
options:
  restart:
    description: Restart the application before verifying.
    type: bool
    default: false
  manager:
    description:
      - How the application is restarted.
      - C(systemd) runs C(systemctl restart <service>); C(supervisor) runs
        C(supervisorctl [-c <supervisor_config>] restart <service>) and fails unless the program ends RUNNING;
        C(command) runs O(restart_command), or O(stop_command) then O(start_command); C(none) does not restart.
    type: str
    choices: [command, systemd, supervisor, none]
    default: command
  service:
    description: The unit (systemd) or program (supervisor) name.
    type: str
  supervisor_config:
    description: The supervisord configuration file C(supervisorctl) reads (its default search path otherwise).
    type: path
  supervisorctl:
    description: The C(supervisorctl) executable.
    type: path
    default: supervisorctl
  restart_command:
    description: The restart command, a list or a string split like a shell would (no shell runs it).
    type: raw
  stop_command:
    description: With O(manager=command) and no O(restart_command), the command that stops the application.
    type: raw
  start_command:
    description: With O(manager=command) and no O(restart_command), the command that starts it again.
    type: raw
  only_if_unhealthy:
    description: With O(restart=true), check once first and restart only when the check fails (idempotent re-runs).
    type: bool
    default: false
  health_url:
    description: URL that answers 2xx when the application is healthy.
    type: str
  version_url:
    description: URL whose body is the running version, plain or JSON with a C(version) key.
    type: str
  expect_version:
    description: The version the application must report.
    type: str
  app_root:
    description:
      - With O(release) and no O(version_url), check that C(<app_root>/current/REVISION) equals
        C(<app_root>/releases/<release>/REVISION) (the deployed revision is the target's).
    type: path
  release:
    description: The release whose C(REVISION) the live one must equal.
    type: str
  retries:
    description: How many times to poll before failing.
    type: int
    default: 20
  delay:
    description: Seconds between polls.
    type: float
    default: 0.5
  timeout:
    description: Seconds each HTTP request may take.
    type: float
    default: 5
author:
  - release-rollback contributors (@release-rollback)
"""

EXAMPLES = r"""
- name: Restart and verify
  release.rollback.app_service:
    restart: true
    restart_command: [/srv/shop/bin/service, restart]
    health_url: http://127.0.0.1:8080/health
    version_url: http://127.0.0.1:8080/version
    expect_version: "20261120090000Z"
"""

RETURN = r"""
restarted:
  description: Whether the application was restarted.
  returned: always
  type: bool
health:
  description: The last health status code seen, or the error.
  returned: always
  type: raw
version:
  description: The last version the application reported.
  returned: always
  type: str
attempts:
  description: How many polls it took.
  returned: always
  type: int
"""

import json
import os
import shlex
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import open_url


def _get(url, timeout):
    try:
        resp = open_url(url, timeout=timeout, validate_certs=False, follow_redirects="none")
        return resp.getcode(), resp.read(4096).decode("utf-8", "replace")
    except Exception as exc:  # HTTPError carries a code; everything else is "no answer"
        code = getattr(exc, "code", None)
        return code, str(exc)


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


def _restart_commands(p):
    """The argument lists that restart the application with its manager, in order."""
    manager = p["manager"]
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


def main():
    module = AnsibleModule(
        argument_spec=dict(
            restart=dict(type="bool", default=False),
            manager=dict(type="str", default="command", choices=["command", "systemd", "supervisor", "none"]),
            service=dict(type="str"),
            supervisor_config=dict(type="path"),
            supervisorctl=dict(type="path", default="supervisorctl"),
            restart_command=dict(type="raw"),
            stop_command=dict(type="raw"),
            start_command=dict(type="raw"),
            only_if_unhealthy=dict(type="bool", default=False),
            health_url=dict(type="str"),
            version_url=dict(type="str"),
            expect_version=dict(type="str"),
            app_root=dict(type="path"),
            release=dict(type="str"),
            retries=dict(type="int", default=20),
            delay=dict(type="float", default=0.5),
            timeout=dict(type="float", default=5),
        ),
        required_if=[
            ("manager", "systemd", ("service",)),
            ("manager", "supervisor", ("service",)),
        ],
        supports_check_mode=True,
    )
    p = module.params
    if (
        p["restart"]
        and p["manager"] == "command"
        and not p["restart_command"]
        and not (p["stop_command"] and p["start_command"])
    ):
        module.fail_json(msg="manager command needs restart_command, or stop_command and start_command")
    restarted = False
    needed = p["restart"] and p["manager"] != "none"
    if needed and p["only_if_unhealthy"]:
        needed = not verify(dict(p, retries=1, delay=0))[0]
    if needed:
        if module.check_mode:
            module.exit_json(changed=True, restarted=False, health=None, version=None, attempts=0)
        for argv in _restart_commands(p):
            rc, out, err = module.run_command(argv)
            # supervisorctl exits 0 on some failures (older versions): its output says ERROR then.
            if rc != 0 or (p["manager"] == "supervisor" and "ERROR" in (out + err)):
                module.fail_json(
                    msg="%s failed with exit code %d: %s" % (" ".join(argv), rc, (err or out).strip()[-500:]),
                    restarted=False,
                    health=None,
                    version=None,
                    attempts=0,
                )
        restarted = True
    ok, health, version, attempts = verify(p)
    result = dict(changed=restarted, restarted=restarted, health=health, version=version, attempts=attempts)
    if ok and not p["version_url"] and p["app_root"] and p["release"]:
        live, wanted = _revision(p["app_root"], "current"), _revision(p["app_root"], "releases/" + p["release"])
        result["revision"] = live
        if live != wanted:
            module.fail_json(
                msg="current/REVISION is %s, but release %s has REVISION %s" % (live, p["release"], wanted), **result
            )
    if not ok:
        if p["expect_version"] and version is not None and version != p["expect_version"]:
            why = "reports version %s, expected %s" % (version, p["expect_version"])
            healthy = not p["health_url"] or (isinstance(health, int) and 200 <= health < 300)
            if not healthy:
                why += ", and is not healthy (last answer: %s)" % health
        else:
            why = "is not healthy (last answer: %s)" % health
        module.fail_json(msg="the application %s after %d attempt(s)" % (why, attempts), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
