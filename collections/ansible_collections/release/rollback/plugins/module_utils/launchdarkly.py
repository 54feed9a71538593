# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""LaunchDarkly: turn flags off in one environment with a semantic patch and read them back.

``PATCH /api/v2/flags/{project}/{flag}`` with ``Content-Type: application/json;
domain-model=launchdarkly.semanticpatch`` and the instruction ``turnFlagOff`` for the environment
sets the flag's targeting off: every context gets the flag's off variation. The state is read from
``GET /api/v2/flags/{project}/{flag}?env={environment}`` (``environments.<env>.on``). The access
token goes in the ``Authorization`` header as is. Pure Python, standard library only.
"""

from __future__ import annotations

from urllib.parse import quote

from ansible_collections.release.rollback.plugins.module_utils.flag_common import (
    FlagError,
    each_flag,
    expect,
    path_part,
    request,
)

DEFAULT_URL = "https://app.launchdarkly.com"
SEMANTIC_PATCH = "application/json; domain-model=launchdarkly.semanticpatch"


def turn_off(
    url,
    project,
    environment,
    names,
    token,
    check_mode=False,
    timeout=10,
    validate_certs=True,
    comment=None,
    expected=None,
):
    base = (url or DEFAULT_URL).rstrip("/")
    headers = {"Authorization": token or ""}

    def flag_url(name):
        return "%s/api/v2/flags/%s/%s" % (base, path_part(project), path_part(name))

    def read(name):
        target = "%s?env=%s" % (flag_url(name), quote(environment, safe=""))
        resp = expect(request("GET", target, headers, None, timeout, validate_certs), "reading flag %s" % name, target)
        data = resp.json if isinstance(resp.json, dict) else {}
        env = (data.get("environments") or {}).get(environment)
        if not isinstance(env, dict) or "on" not in env:
            raise FlagError("flag %s has no environment %s in project %s" % (name, environment, project))
        state = {
            "state": "on" if env["on"] else "off",
            "environment": environment,
            "project": project,
            "off": env["on"] is False,
        }
        variations = data.get("variations") or []
        off_index = env.get("offVariation")
        if isinstance(off_index, int) and 0 <= off_index < len(variations):
            state["off_value"] = (variations[off_index] or {}).get("value")
        if "_version" in env:
            state["version"] = env["_version"]
        return state

    def write(name):
        target = flag_url(name)
        body = {
            "environmentKey": environment,
            "comment": comment or "release-rollback: turn the release's flag off",
            "instructions": [{"kind": "turnFlagOff"}],
        }
        resp = request(
            "PATCH", target, dict(headers, **{"Content-Type": SEMANTIC_PATCH}), body, timeout, validate_certs
        )
        expect(resp, "turning flag %s off" % name, target)

    return each_flag("launchdarkly", names, read, write, check_mode=check_mode, expected=expected)
