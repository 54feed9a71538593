#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: db_migrate
short_description: Read or roll back a database's migration revision with Alembic
version_added: "0.1.0"
description:
  - Runs Alembic in the application's environment (its Python, its C(alembic.ini) and C(env.py)), so
    the application's models and settings load as they do at deploy time.
  - The database URL is handed to C(env.py) in the C(DATABASE_URL) environment variable, never on a
    command line, and is never returned or logged.
  - With O(state=status) it reads the current revision; with O(state=downgraded) it downgrades to
    O(target_revision) and reads the revision back.
options:
  state:
    description: Read the revision, or downgrade to O(target_revision).
    type: str
    choices: [status, downgraded]
    default: status
  config:
    description: The application's C(alembic.ini).
    type: path
    required: true
  url:
    description: SQLAlchemy database URL, passed to C(env.py) as C(DATABASE_URL).
    type: str
  python:
    description: The application's Python interpreter (defaults to the one running this module).
    type: path
  target_revision:
    description: The revision to downgrade to.
    type: str
author:
  - release-rollback contributors (@release-rollback)
"""

EXAMPLES = r"""
- name: Downgrade to the previous release's revision
  release.rollback.db_migrate:
    state: downgraded
    config: /srv/shop/current/alembic.ini
    url: "{{ vault_shop_db_url }}"
    target_revision: a1b2c3
"""

RETURN = r"""
current:
  description: The revision the database is at after the module ran.
  returned: success
  type: str
before:
  description: The revision before the module ran.
  returned: success
  type: str
"""

import os
import re
import sys

from ansible.module_utils.basic import AnsibleModule

_REV = re.compile(r"^([0-9A-Za-z_]+)(?: \(.*\))?\s*$")


def _alembic(module, args):
    p = module.params
    env = {"DATABASE_URL": p["url"]} if p["url"] else {}
    cmd = [p["python"] or sys.executable, "-m", "alembic", "-c", p["config"]] + args
    rc, out, err = module.run_command(cmd, cwd=os.path.dirname(p["config"]), environ_update=env)
    return rc, out, err


def current(module):
    rc, out, err = _alembic(module, ["current"])
    if rc != 0:
        module.fail_json(msg="alembic current failed: %s" % _last_line(err or out))
    revs = [m.group(1) for m in (_REV.match(line.strip()) for line in out.splitlines()) if m]
    if len(revs) > 1:
        module.fail_json(msg="the database has several heads (%s): merge or pick one" % ", ".join(revs))
    return revs[0] if revs else "base"


def _last_line(text):
    lines = [x for x in (text or "").strip().splitlines() if x.strip()]
    return lines[-1][-500:] if lines else "no output"


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", default="status", choices=["status", "downgraded"]),
            config=dict(type="path", required=True),
            url=dict(type="str", no_log=True),
            python=dict(type="path"),
            target_revision=dict(type="str"),
        ),
        required_if=[("state", "downgraded", ("target_revision",))],
        supports_check_mode=True,
    )
    p = module.params
    if not os.path.isfile(p["config"]):
        module.fail_json(msg="the Alembic configuration %s does not exist" % p["config"])
    before = current(module)
    if p["state"] == "status" or before == p["target_revision"]:
        module.exit_json(changed=False, before=before, current=before)
    if module.check_mode:
        module.exit_json(changed=True, before=before, current=before)
    rc, out, err = _alembic(module, ["downgrade", p["target_revision"]])
    after = current(module)
    if rc != 0:
        module.fail_json(
            msg="alembic downgrade to %s failed at revision %s: %s"
            % (p["target_revision"], after, _last_line(err or out)),
            before=before,
            current=after,
        )
    if after != p["target_revision"]:
        module.fail_json(
            msg="after the downgrade the database is at %s, not %s" % (after, p["target_revision"]),
            before=before,
            current=after,
        )
    module.exit_json(changed=True, before=before, current=after)


if __name__ == "__main__":
    main()
