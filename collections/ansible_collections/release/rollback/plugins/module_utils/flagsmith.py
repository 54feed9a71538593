# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Flagsmith: set a feature's environment state to ``enabled: false`` and read it back.

The environment default state of a feature is found with
``GET /api/v1/environments/{environment_key}/featurestates/?feature_name={flag}`` (the entry with
no identity and no segment), changed with ``PATCH .../featurestates/{id}/`` and body
``{"enabled": false}``, and read back with ``GET .../featurestates/{id}/``. Authentication is the
organisation API key as ``Authorization: Api-Key <key>``. Pure Python, standard library only.
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

DEFAULT_URL = "https://api.flagsmith.com"


def turn_off(url, environment, names, token, check_mode=False, timeout=10, validate_certs=True, expected=None):
    base = (url or DEFAULT_URL).rstrip("/")
    headers = {"Authorization": "Api-Key %s" % (token or "")}
    states_url = "%s/api/v1/environments/%s/featurestates/" % (base, path_part(environment))
    ids = {}

    def state_of(name, data):
        enabled = bool(data.get("enabled"))
        return {
            "state": "enabled" if enabled else "disabled",
            "environment": environment,
            "feature_state": data.get("id"),
            "off": not enabled,
        }

    def read(name):
        if name in ids:
            target = "%s%s/" % (states_url, ids[name])
            resp = expect(
                request("GET", target, headers, None, timeout, validate_certs), "reading flag %s" % name, target
            )
            return state_of(name, resp.json if isinstance(resp.json, dict) else {})
        target = "%s?feature_name=%s" % (states_url, quote(name, safe=""))
        resp = expect(request("GET", target, headers, None, timeout, validate_certs), "reading flag %s" % name, target)
        data = resp.json
        results = data.get("results") if isinstance(data, dict) else data
        defaults = [
            r
            for r in (results or [])
            if isinstance(r, dict) and r.get("identity") is None and r.get("feature_segment") is None
        ]
        if len(defaults) != 1:
            raise FlagError(
                "flag %s: expected one environment state in environment %s, found %d (is the feature name right?)"
                % (name, environment, len(defaults))
            )
        ids[name] = defaults[0].get("id")
        return state_of(name, defaults[0])

    def write(name):
        target = "%s%s/" % (states_url, ids[name])
        resp = request(
            "PATCH",
            target,
            dict(headers, **{"Content-Type": "application/json"}),
            {"enabled": False},
            timeout,
            validate_certs,
        )
        expect(resp, "disabling flag %s" % name, target)

    return each_flag("flagsmith", names, read, write, check_mode=check_mode, expected=expected)
