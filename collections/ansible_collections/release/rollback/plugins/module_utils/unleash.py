# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unleash: disable flags in one environment through the admin API and read them back.

``POST /api/admin/projects/{project}/features/{flag}/environments/{env}/off`` disables the flag in
that environment: every evaluation there returns false, whatever the strategies. The state is read
from ``GET /api/admin/projects/{project}/features/{flag}`` (its ``environments`` list). The admin
token goes in the ``Authorization`` header as is. Pure Python, standard library only.
"""

from __future__ import annotations

from ansible_collections.release.rollback.plugins.module_utils.flag_common import (
    FlagError,
    each_flag,
    expect,
    path_part,
    request,
)


def turn_off(url, project, environment, names, token, check_mode=False, timeout=10, validate_certs=True, expected=None):
    base = url.rstrip("/")
    headers = {"Authorization": token or ""}

    def feature_url(name):
        return "%s/api/admin/projects/%s/features/%s" % (base, path_part(project), path_part(name))

    def read(name):
        target = feature_url(name)
        resp = expect(request("GET", target, headers, None, timeout, validate_certs), "reading flag %s" % name, target)
        data = resp.json if isinstance(resp.json, dict) else {}
        envs = data.get("environments") or []
        env = next((e for e in envs if isinstance(e, dict) and e.get("name") == environment), None)
        if env is None:
            raise FlagError(
                "flag %s has no environment %s in project %s (it has: %s)"
                % (name, environment, project, ", ".join(str(e.get("name")) for e in envs) or "none")
            )
        enabled = bool(env.get("enabled"))
        return {
            "state": "enabled" if enabled else "disabled",
            "environment": environment,
            "project": project,
            "strategies": len(env.get("strategies") or []),
            "off": not enabled,
        }

    def write(name):
        target = "%s/environments/%s/off" % (feature_url(name), path_part(environment))
        expect(
            request("POST", target, headers, None, timeout, validate_certs),
            "disabling flag %s" % name,
            target,
            ok=(200, 202, 204),
        )

    return each_flag("unleash", names, read, write, check_mode=check_mode, expected=expected)
