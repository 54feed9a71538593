#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: flag_off
short_description: Turn a release's feature flags off in its flag system and read them back
version_added: "1.0.0"
description:
  - Turns each flag off, reads its state back, and returns per flag the state before and after and
    the time it was turned off, enough to turn it back on later.
  - C(flagd) flag files get a deterministic off (C(ENABLED), the off variant as C(defaultVariant), no
    C(targeting)); only the release's flag objects are rewritten, every other byte of the file stays.
  - C(unleash) disables the flag in one environment through the admin API; C(launchdarkly) sends the
    semantic patch C(turnFlagOff) for one environment; C(flagsmith) sets the environment's feature state
    to C(enabled=false); C(http) sends a templated request and checks a templated read-back.
  - A flag system that cannot be reached, refuses the token, rate-limits or answers 5xx (or a flag file
    that cannot be read or written) fails the task with C(unavailable=true); the flags it could not turn
    off are returned with C(left_on=true).
options:
  backend:
    description: The flag system.
    type: str
    choices: [flagd, unleash, launchdarkly, flagsmith, http]
    default: flagd
  names:
    description: The flags to turn off.
    type: list
    elements: str
    required: true
  expect:
    description:
      - Compare-and-swap, flag name to the digest of the state the plan found (C(sha256:...) of its
        canonical JSON), or null when the plan could not read it.
      - A flag that is on and whose state is not that one is left as it is and reported C(stale).
      - A flag with null is turned off whatever its state (the plan said its state was unknown).
    type: dict
  file:
    description: The flagd flag file (C(flagd)).
    type: path
  url:
    description:
      - Base URL of the flag system (C(unleash); C(launchdarkly), default U(https://app.launchdarkly.com);
        C(flagsmith), default U(https://api.flagsmith.com)).
    type: str
  project:
    description: Project key (C(unleash), C(launchdarkly)); a template value for C(http).
    type: str
  environment:
    description:
      - Environment name (C(unleash)), environment key (C(launchdarkly)) or environment API key (C(flagsmith));
        a template value for C(http).
    type: str
  request:
    description:
      - C(http) only. The request that turns one flag off, C({method, url, headers, body, status}). Strings may use
        C({flag}), C({environment}), C({project}); header values may also use C({token}).
    type: dict
  read_back:
    description:
      - C(http) only. The request that reads one flag, C({method, url, headers, field, off_value}); the flag is off
        when the JSON answer's dotted C(field) equals C(off_value) (default C(false)).
    type: dict
  token:
    description: API token of the flag system. Never logged.
    type: str
  timeout:
    description: Seconds to wait for each HTTP answer.
    type: float
    default: 10
  validate_certs:
    description: Verify TLS certificates.
    type: bool
    default: true
  comment:
    description: Change comment recorded by flag systems that keep one (C(launchdarkly)).
    type: str
  run_id:
    description: The rollback run; with O(record_dir), the flags' states are kept in the run's record.
    type: str
  record_dir:
    description:
      - Where the run's record C(.release-rollback-run-<run_id>.flags.json) is kept (mode 0600, no secrets).
      - Before it changes anything, the module records each flag's state there; a later attempt of the same
        run (a resume after the driver was killed) reports that state as C(before), not the C(off) it finds,
        and the time the earlier attempt turned the flag off.
    type: path
requirements:
  - Python 3 on the host; the module runs no external command. The C(unleash), C(launchdarkly), C(flagsmith)
    and C(http) backends need the flag system's HTTP API reachable from the host.
attributes:
  check_mode:
    description: Can run in check mode and return the changed status prediction without modifying the target.
    support: full
    details:
      - Reads each flag and reports whether it would be turned off; the flag file or flag system is not
        changed and no run record is written.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode) when in diff mode.
    support: full
  platform:
    description: Target OS/families that can be operated against.
    support: N/A
    platforms: posix
author:
  - release-rollback contributors (@release-rollback)
"""

EXAMPLES = r"""
- name: Turn the release's flags off in a flagd file
  release.rollback.flag_off:
    backend: flagd
    file: /etc/flagd/flags.json
    names: [new-checkout]

- name: Disable the release's flags in Unleash's production environment
  release.rollback.flag_off:
    backend: unleash
    url: https://unleash.example.com
    project: shop
    environment: production
    names: [new-checkout, new-search]
    token: "{{ lookup('ansible.builtin.env', 'UNLEASH_ADMIN_TOKEN') }}"
"""

RETURN = r"""
flags:
  description:
    - Flag name to C(backend), C(before), C(after), C(read_back) (states with at least C(off)), C(time) (when it
      was turned off, UTC), C(changed), and C(left_on) and C(error) when it could not be turned off.
  returned: always
  type: dict
unavailable:
  description: Whether the flag system itself could not be used.
  returned: failure
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.release.rollback.plugins.module_utils import (
    flag_http,
    flagd,
    flagsmith,
    launchdarkly,
    runrecord,
    unleash,
)
from ansible_collections.release.rollback.plugins.module_utils.flag_common import FlagError, utcnow

_NEEDS = {
    "flagd": ("file",),
    "unleash": ("url", "project", "environment"),
    "launchdarkly": ("project", "environment"),
    "flagsmith": ("environment",),
    "http": ("request", "read_back"),
}


def turn_off(p, check_mode):
    backend = p["backend"]
    http = {
        "timeout": p["timeout"],
        "validate_certs": p["validate_certs"],
        "check_mode": check_mode,
        "expected": p["expect"],
    }
    if backend == "flagd":
        return flagd.turn_off(p["file"], p["names"], check_mode=check_mode, strict=False, expected=p["expect"])
    if backend == "unleash":
        return unleash.turn_off(p["url"], p["project"], p["environment"], p["names"], p["token"], **http)
    if backend == "launchdarkly":
        return launchdarkly.turn_off(
            p["url"], p["project"], p["environment"], p["names"], p["token"], comment=p["comment"], **http
        )
    if backend == "flagsmith":
        return flagsmith.turn_off(p["url"], p["environment"], p["names"], p["token"], **http)
    return flag_http.turn_off(
        p["names"],
        p["request"],
        p["read_back"],
        token=p["token"],
        environment=p["environment"],
        project=p["project"],
        **http,
    )


def _record_before(p, record_path, check_mode):
    """The run's record of the flags, with the state of every flag it does not know yet read (changing
    nothing) and written to it before anything is turned off."""
    if not record_path or check_mode:
        return None
    record = runrecord.load(record_path) or {"flags": {}}
    unknown = [n for n in p["names"] if n not in record["flags"]]
    if unknown:
        try:
            read = turn_off(dict(p, names=unknown), check_mode=True)
        except FlagError:
            return record  # the flag system is down: the real call below says so
        for name in unknown:
            before = read["flags"][name].get("before")
            if before is not None:
                record["flags"][name] = {"before": before, "read_at": utcnow()}
        runrecord.save(record_path, record)
    return record


def _merge_record(result, record):
    """A flag this attempt found off that an earlier attempt of the run turned off keeps that attempt's
    ``before`` (and says so); the record gets when each flag was turned off."""
    if not record:
        return
    for name, entry in result["flags"].items():
        kept = record["flags"].get(name) or {}
        if entry.get("changed") and entry.get("time"):
            kept["turned_off"] = entry["time"]
        elif (entry.get("before") or {}).get("off") and kept.get("before") and not kept["before"].get("off"):
            entry["before"] = kept["before"]
            entry["time"] = kept.get("turned_off") or kept.get("read_at")
            entry["earlier_attempt"] = True
            entry["msg"] = "turned off by an earlier attempt of this run"


def main():
    module = AnsibleModule(
        argument_spec=dict(
            backend=dict(type="str", default="flagd", choices=sorted(_NEEDS)),
            names=dict(type="list", elements="str", required=True),
            file=dict(type="path"),
            url=dict(type="str"),
            project=dict(type="str"),
            environment=dict(type="str"),
            request=dict(type="dict"),
            read_back=dict(type="dict"),
            token=dict(type="str", no_log=True),
            timeout=dict(type="float", default=10),
            validate_certs=dict(type="bool", default=True),
            comment=dict(type="str"),
            expect=dict(type="dict"),
            run_id=dict(type="str"),
            record_dir=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    missing = [k for k in _NEEDS[p["backend"]] if not p.get(k)]
    if missing:
        module.fail_json(msg="backend %s needs %s" % (p["backend"], ", ".join(missing)), flags={})
    if not p["token"] and p["backend"] in ("unleash", "launchdarkly", "flagsmith"):
        module.warn(
            "no token for %s: set the variable named by the manifest's flags.token_env, or rollback_flags_token"
            % p["backend"]
        )
    try:
        record_path = runrecord.path(p["record_dir"], p["run_id"], "flags")
        record = _record_before(p, record_path, module.check_mode)
        result = turn_off(p, module.check_mode)
        _merge_record(result, record)
        if record is not None:
            runrecord.save(record_path, record)
    except ValueError as exc:
        module.fail_json(msg=str(exc), flags={})
    except FlagError as exc:
        flags = {n: {"backend": p["backend"], "changed": False, "left_on": True, "error": str(exc)} for n in p["names"]}
        module.fail_json(
            msg="%s; flags left on: %s" % (exc, ", ".join(p["names"])),
            unavailable=exc.unavailable,
            flags=flags,
            changed=False,
        )
    errors = result["errors"]
    if errors:
        left_on = [n for n in p["names"] if result["flags"][n].get("left_on")]
        module.fail_json(
            msg="%s; flags left on: %s"
            % ("; ".join(errors[n] for n in p["names"] if n in errors), ", ".join(left_on) or "none"),
            unavailable=result["unavailable"],
            stale=bool(result.get("stale")) and len(result["stale"]) == len(errors),
            flags=result["flags"],
            changed=result["changed"],
        )
    verb = "would be turned off" if module.check_mode and result["changed"] else "read back off"
    diff = result.get("diff") or _state_diff(p, result)
    module.exit_json(
        changed=result["changed"],
        flags=result["flags"],
        msg="flags %s %s (%s)" % (", ".join(p["names"]), verb, p["backend"]),
        **({"diff": diff} if module._diff and diff and result["changed"] else {}),
    )


def _state_diff(p, result):
    """A flag system without a file to compare: each changed flag's state before and after, one line each."""
    changed = [
        n
        for n in p["names"]
        if (result["flags"].get(n) or {}).get("would_change") or result["flags"].get(n, {}).get("changed")
    ]
    if not changed:
        return None

    def line(name, state):
        state = state or {}
        return "%s: %s\n" % (name, "off" if state.get("off") else "on (%s)" % (state.get("state") or "enabled"))

    where = "%s flags" % p["backend"]
    return {
        "before_header": where,
        "after_header": where,
        "before": "".join(line(n, result["flags"][n].get("before")) for n in changed),
        "after": "".join(line(n, {"off": True}) for n in changed),
    }


if __name__ == "__main__":
    main()
