# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Down scripts in the golang-migrate convention (``NNN_name.down.sql``), run by the module itself."""

from __future__ import annotations

import os
import re

from ansible_collections.release.rollback.plugins.module_utils import dbmigrate as _db
from ansible_collections.release.rollback.plugins.module_utils.dbtools import base

_SQL_FILE = re.compile(r"^(\d+)_(.+)\.(up|down)\.sql$")
_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class SqlScripts(base.MigrationTool):
    """Down scripts in the golang-migrate convention, run by the module itself.

    The migrations table (``schema_migrations`` unless ``settings.table`` names another) holds one
    row ``(version, dirty)``. Like golang-migrate, a step records the version it goes to as dirty,
    runs the script, then marks it clean; on PostgreSQL and SQLite the three run in one
    transaction, so a failed step leaves nothing behind.
    """

    name = "sql"
    numeric = True
    runs = (
        "`NNN_name.down.sql` in `migrations:` (golang-migrate's files), run by the module with `psql`, "
        "`mariadb` or sqlite3, recorded in golang-migrate's table `(version, dirty)`"
    )
    recognises = (
        "the down script's SQL: DROP TABLE/COLUMN, TRUNCATE, DELETE, UPDATE, SET NULL, type narrowing; "
        "anything it cannot parse is unclassified; an empty or missing down script is irreversible"
    )
    settings_doc = {"table": "The migrations table (golang-migrate's -x-migrations-table); default schema_migrations."}

    def __init__(self, module, conn, client):
        base.MigrationTool.__init__(self, module, conn, client)
        self.table = self.settings.get("table") or "schema_migrations"
        if not _TABLE_NAME.match(self.table):
            raise base.Fail("settings.table %r is not a table name: use letters, digits and _" % self.table[:60])
        self.versions = self._scan()

    def _scan(self):
        if not os.path.isdir(self.cwd):
            raise base.Fail("the migrations directory %s does not exist" % self.cwd)
        versions = {}
        for name in os.listdir(self.cwd):
            m = _SQL_FILE.match(name)
            if m:
                entry = versions.setdefault(int(m.group(1)), {"name": m.group(2)})
                entry[m.group(3)] = os.path.join(self.cwd, name)
        return versions

    # -- talking to the database: through the same client the backup uses
    def rows(self, sql):
        return self.client.rows(sql)

    def script(self, body):
        return self.client.script(body)

    def current(self):
        self.dirty = None
        if not self.client.has_table(self.table):
            return base.BASE
        rows = self.rows("SELECT version, dirty FROM %s" % self.table)
        if not rows:
            return base.BASE
        version, dirty = int(rows[0][0]), str(rows[0][1]).lower() in ("1", "t", "true")
        rev = base.BASE if version < 0 else str(version)
        if dirty:
            self.dirty = {"version": rev}
        return rev

    def require_clean(self):
        if self.dirty:
            raise base.Fail(
                "%s is dirty at version %s: a migration stopped half-way and the schema is in an "
                "unknown state. Inspect it, fix it by hand, then mark the version clean (migrate force VERSION); "
                "nothing was changed" % (self.table, self.dirty["version"]),
                record={"dirty": self.dirty},
            )

    def steps(self, current, target, live_schema=None):
        if current == target:
            return []
        known = sorted(self.versions)
        for rev in (current, target):
            if rev != base.BASE and (not rev.isdigit() or int(rev) not in self.versions):
                raise base.Fail("version %s has no migration scripts in %s" % (rev, self.cwd))
        low = -1 if target == base.BASE else int(target)
        if current != base.BASE and int(current) < low:
            raise base.Fail("version %s is above the database's version %s: nothing to roll back" % (target, current))
        steps = []
        for i in range(len(known) - 1, -1, -1):
            v = known[i]
            if current == base.BASE or v > int(current) or v <= low:
                continue
            path = self.versions[v].get("down")
            text = None
            if path:
                with open(path, encoding="utf-8") as fh:
                    text = fh.read()
            step = {"id": str(v), "revision": str(v), "to": str(known[i - 1]) if i > 0 else base.BASE}
            step.update(_db.classify_sql_script(text))
            step["script"] = os.path.basename(path) if path else None
            steps.append(step)
        return steps

    def _set_version(self, rev, dirty):
        d = self.conn["dialect"]
        dirty_sql = ("1" if dirty else "0") if d != "postgresql" else ("TRUE" if dirty else "FALSE")
        sql = "DELETE FROM %s;\n" % self.table
        if rev != base.BASE or dirty:
            sql += "INSERT INTO %s (version, dirty) VALUES (%d, %s);\n" % (
                self.table,
                -1 if rev == base.BASE else int(rev),
                dirty_sql,
            )
        return sql

    def downgrade(self, to, step=None):
        with open(self.versions[int(step["revision"])]["down"], encoding="utf-8") as fh:
            body = fh.read()
        if self.conn["dialect"] == "mysql":
            # No transactional DDL: record the move as dirty first, as golang-migrate does.
            rc, out, err = self.script(self._set_version(to, True))
            if rc != 0:
                return rc, out, err
            rc, out, err = self.script(body)
            if rc != 0:
                return rc, out, err
            return self.script(self._set_version(to, False))
        return self.script(self._set_version(to, True) + body + "\n;\n" + self._set_version(to, False))


TOOL = SqlScripts
