# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A sqitch project, reverted one change at a time by sqitch itself."""

from __future__ import annotations

import os

from ansible_collections.release.rollback.plugins.module_utils import dbmigrate as _db
from ansible_collections.release.rollback.plugins.module_utils.dbtools import base


class Sqitch(base.MigrationTool):
    """A sqitch project (C(sqitch.plan), C(revert/*.sql)), reverted one change at a time with sqitch itself."""

    name = "sqitch"
    runs = "`sqitch revert --to` one change at a time, in the project in `migrations:` (`registry:` if not the default)"
    recognises = (
        "each change's `revert/NAME.sql` with the SQL classifier; a change without a revert script is irreversible"
    )
    settings_doc = {}
    _ENGINES = {"postgresql": "pg", "mysql": "mysql", "sqlite": "sqlite"}

    def __init__(self, module, conn, client):
        base.MigrationTool.__init__(self, module, conn, client)
        self.sqitch = module.get_bin_path("sqitch")
        if not self.sqitch:
            raise base.Fail("sqitch is not installed on the database host: install it (Debian package sqitch)")
        self.changes = self._plan()

    def _plan(self):
        path = os.path.join(self.cwd, "sqitch.plan")
        if not os.path.isfile(path):
            raise base.Fail("the sqitch plan %s does not exist" % path)
        changes = []
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                word = line.strip().split(" ", 1)[0] if line.strip() else ""
                if not word or word[0] in "%#@":
                    continue
                if word in changes:
                    raise base.Fail("change %s is reworked in the sqitch plan: roll it back with sqitch by hand" % word)
                changes.append(word)
        return changes

    def _target(self):
        c = self.conn
        if c["dialect"] == "sqlite":
            return "db:sqlite:" + self.client.sqlite_path()
        auth = (c["user"] + "@") if c.get("user") else ""
        hostport = (c.get("host") or "") + (":%s" % c["port"] if c.get("port") else "")
        return "db:%s://%s%s/%s" % (self._ENGINES[c["dialect"]], auth, hostport, c["database"])

    def _sqitch(self, args):
        env = {
            "SQITCH_FULLNAME": os.environ.get("SQITCH_FULLNAME") or "release-rollback",
            "SQITCH_EMAIL": os.environ.get("SQITCH_EMAIL") or "release-rollback@localhost",
        }
        if self.conn.get("password"):
            env["SQITCH_PASSWORD"] = self.conn["password"]
        cmd = [self.sqitch] + args + ["--target", self._target()]
        if self.p.get("registry"):
            cmd += ["--registry", self.p["registry"]]
        return self.module.run_command(cmd, cwd=self.cwd, environ_update=env)

    def current(self):
        rc, out, err = self._sqitch(["status"])
        if "No changes deployed" in out + err:
            return base.BASE
        if rc != 0:
            raise base.Fail("sqitch status failed: %s" % self.client.tail(err or out))
        for line in out.splitlines():
            if line.startswith("# Name:"):
                return line.split(":", 1)[1].strip()
        raise base.Fail("sqitch status did not name the deployed change: %s" % self.client.tail(out))

    def steps(self, current, target, live_schema=None):
        if current == target:
            return []
        for rev in (current, target):
            if rev != base.BASE and rev not in self.changes:
                raise base.Fail("change %s is not in the sqitch plan %s/sqitch.plan" % (rev, self.cwd))
        top = self.changes.index(current) if current != base.BASE else -1
        low = self.changes.index(target) if target != base.BASE else -1
        if top < low:
            raise base.Fail("change %s comes after the deployed change %s: nothing to revert" % (target, current))
        steps = []
        for i in range(top, low, -1):
            name = self.changes[i]
            path = os.path.join(self.cwd, "revert", name + ".sql")
            text = None
            if os.path.isfile(path):
                with open(path, encoding="utf-8") as fh:
                    text = fh.read()
            step = {"id": name, "revision": name, "to": self.changes[i - 1] if i > 0 else base.BASE}
            step.update(_db.classify_sql_script(text))
            if text is None:
                step["reasons"] = ["there is no revert script"]
            steps.append(step)
        return steps

    def downgrade(self, to, step=None):
        return self._sqitch(["revert", "-y"] + (["--to", to] if to != base.BASE else []))


TOOL = Sqitch
