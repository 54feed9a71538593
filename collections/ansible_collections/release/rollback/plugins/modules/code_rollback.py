#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: code_rollback
short_description: Roll one host's code and configuration back, restart and verify it, in one round trip
version_added: "1.0.0"
description:
  - The per-host work of the code_config stage in a single module call, so that a rollback costs one
    round trip per host.
  - Takes the host's lock C(<app_root>/.rollback.lock) for O(run_id) (or finds it already held by this run),
    switches C(current) to O(target) and restores the configuration exactly like M(release.rollback.release_switch),
    restarts the application and verifies its health and version like M(release.rollback.app_service),
    then gives the lock back.
  - A host that fails keeps this run's lock, so that no other run changes it before this run is resumed.
  - With O(refuse) the host is left exactly as it is (and this run's lock on it is given back); the
    controller passes it when another run holds a host's lock or when earlier batches failed.
  - Returns C(host_result), the host's result for the stage (status, changed, release, msg), on
    success and on failure.
  - Idempotent, a host already on O(target) and healthy is neither switched nor restarted.
options:
  refuse:
    description: Why this host must be left as it is; nothing changes and the module fails with that reason.
    type: str
  refuse_status:
    description: The host's status when O(refuse) is given (C(pending) when an earlier batch halted the stage).
    type: str
    choices: [blocked, skipped, pending]
    default: blocked
  expect_live:
    description:
      - Compare-and-swap, the release the plan found live on this host.
      - When the host runs another release than this one (and than O(target)), it is left exactly as it
        is and its status is C(stale), naming the release found.
    type: str
  restart:
    description: Restart the application (when it was switched, or is not healthy on the target).
    type: bool
    default: true
extends_documentation_fragment:
  - release.rollback.releases
  - release.rollback.releases.layout
  - release.rollback.releases.switch
  - release.rollback.service
  - release.rollback.code_mechanism
requirements:
  - The container CLI (O(container_runtime)) on the host with O(mechanism=containers).
  - C(systemctl) on the host with O(manager=systemd) (or C(auto) with O(service) set).
  - C(supervisorctl) (O(supervisorctl)) on the host with O(manager=supervisor).
  - The commands given in O(restart_command), O(stop_command) and O(start_command) with O(manager=command).
attributes:
  check_mode:
    description: Can run in check mode and return the changed status prediction without modifying the target.
    support: full
    details:
      - Reads the host; no link, file, lock or mark is written and nothing is restarted.
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
- name: Roll the host back, restart and verify it
  release.rollback.code_rollback:
    app_root: /srv/shop
    target: "20261120090000Z"
    run_id: 20261127T031500Z-shop
    lock: true
    restart_command: [/srv/shop/bin/service, restart]
    health_url: http://127.0.0.1:8080/health
    version_url: http://127.0.0.1:8080/version
"""

RETURN = r"""
ansible_facts:
  description: Facts set on the host.
  returned: success
  type: dict
  contains:
    rollback_host_result_code_config:
      description: The host's result for the stage (the same as RV(host_result)).
      type: dict
host_result:
  description: The host's result for the stage.
  returned: always
  type: dict
  contains:
    status:
      description: C(ok), C(failed), C(blocked), C(stale), C(pending) or C(skipped).
      type: str
    changed:
      description: Whether the host changed.
      type: bool
    release:
      description: The release the host is on now.
      type: str
    msg:
      description: What happened, in one sentence.
      type: str
    health:
      description: The health status code (or error) the verification read back, when it ran.
      type: raw
    version:
      description: The version the application reported to the verification, when it did.
      type: str
    digest:
      description: The image digest read back from the container (O(mechanism=containers)).
      type: str
from:
  description: The release that was live before.
  returned: when the switch ran
  type: str
to:
  description: The release now live.
  returned: when the switch ran
  type: str
config_restored:
  description: Configuration files restored from the snapshot.
  returned: when the switch ran
  type: list
  elements: str
restarted:
  description: Whether the application was restarted.
  returned: when the switch ran
  type: bool
health:
  description: The last health status code seen, or the error.
  returned: when the switch ran
  type: raw
version:
  description: The last version the application reported.
  returned: when the switch ran
  type: str
attempts:
  description: How many polls the verification took.
  returned: when the switch ran
  type: int
from_digest:
  description: The image digest the container ran before (O(mechanism=containers)).
  returned: when the switch ran
  type: str
to_digest:
  description: The image digest the container was recreated from (O(mechanism=containers)).
  returned: when the switch ran
  type: str
kept_container:
  description: The name the old container is kept under, stopped (O(mechanism=containers)).
  returned: when the switch ran
  type: str
digest:
  description: The image digest the container runs, read back after the switch (O(mechanism=containers)).
  returned: when the switch ran
  type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.release.rollback.plugins.module_utils.code_mechanisms import registry as mechanisms
from ansible_collections.release.rollback.plugins.module_utils.code_mechanisms.base import MechanismError
from ansible_collections.release.rollback.plugins.module_utils.releases import (
    SWITCH_ARGS,
    ReleaseError,
    release_lock,
)
from ansible_collections.release.rollback.plugins.module_utils.service import SERVICE_ARGS

_HOST_ERRORS = (ReleaseError, MechanismError, OSError)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            SERVICE_ARGS,
            **SWITCH_ARGS,
            refuse=dict(type="str"),
            refuse_status=dict(type="str", default="blocked", choices=["blocked", "skipped", "pending"]),
            expect_live=dict(type="str"),
            restart=dict(type="bool", default=True),
            **mechanisms.args(),
        ),
        supports_check_mode=True,
    )
    p = module.params
    holds_lock = p["lock"] and bool(p["run_id"])
    mechanism = mechanisms.get(p["mechanism"])
    run = mechanism.runner(module)

    def fail(status, changed, release, msg, **extra):
        host = dict(status=status, changed=changed, release=release, msg=msg)
        # What the verification read back, when it got that far.
        host.update((k, extra[k]) for k in ("health", "version") if extra.get(k) is not None)
        module.fail_json(msg=msg, host_result=host, changed=changed, **extra)

    info, live, lock_problem = None, None, None
    try:
        info = mechanism.discover(p, run)
        live = info["live"]
        if info["lock_problem"] and not (p["break_stale_lock"] and info["lock"].get("stale")):
            lock_problem = info["lock_problem"]
    except _HOST_ERRORS:
        pass  # the switch below says why this host cannot be used
    if p["refuse"]:
        if holds_lock and not module.check_mode and not lock_problem:
            release_lock(p["app_root"], p["run_id"])
        fail(p["refuse_status"], False, live or "unknown", "not switched, still on %s: %s" % (live, p["refuse"]))
    if holds_lock and lock_problem:
        fail("blocked", False, live or "unknown", "not switched, still on %s: %s" % (live, lock_problem))
    stale = mechanism.cas_problem(p, info) if info else None
    if stale:
        # Compare-and-swap: the host no longer runs the release the plan found, so the plan does not
        # apply to it. It is left exactly as it is.
        if holds_lock and not module.check_mode:
            release_lock(p["app_root"], p["run_id"])
        fail("stale", False, live, "not switched: %s" % stale)
    problem = mechanism.argument_problem(p)
    if problem:
        fail("failed", False, live or "unknown", problem)
    try:
        switched = mechanism.switch(dict(p, lock=holds_lock), info, module.check_mode, run)
    except _HOST_ERRORS as exc:
        fail("failed", False, live or "unknown", "switch: %s" % exc)
    diff = switched.pop("diff", None)
    checked, failure = mechanism.restart_and_verify(p, switched, run, module.check_mode)
    result = dict(switched, **checked)
    changed = result.pop("changed") or switched["changed"]
    if failure:
        # The host keeps this run's lock: nothing else may change it before the run is resumed.
        fail("failed", changed, p["target"], "restart and verify: %s" % failure, **result)
    if holds_lock and not module.check_mode:
        release_lock(p["app_root"], p["run_id"])
    restarted = ", restarted" if checked["restarted"] else ""
    if switched.get("kept_container"):
        restarted = " (image %s), recreated; the old container is kept stopped as %s" % (
            switched["to_digest"],
            switched["kept_container"],
        )
    result["host_result"] = dict(
        status="ok", changed=changed, release=p["target"], msg="on %s%s" % (p["target"], restarted)
    )
    if module.check_mode:
        # Nothing was switched: the host still runs what it ran; the result says what would happen.
        if switched["from"] != p["target"]:
            would = "would switch from %s to %s" % (switched["from"], p["target"])
        else:
            would = (
                "on %s, would restore its configuration" % p["target"]
                if switched["changed"]
                else "already on %s" % p["target"]
            )
        result["host_result"].update(release=switched["from"] or live or "unknown", msg="check mode: %s" % would)
    read = ("health", "version") + (() if module.check_mode else ("digest",))
    result["host_result"].update((k, checked[k]) for k in read if checked.get(k) is not None)
    facts = {"rollback_host_result_code_config": result["host_result"]}
    if module._diff and diff:
        result["diff"] = diff
    module.exit_json(changed=changed, ansible_facts=facts, **result)


if __name__ == "__main__":
    main()
