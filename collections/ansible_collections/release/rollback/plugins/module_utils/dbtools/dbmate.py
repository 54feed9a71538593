# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""dbmate: ``NNN_name.sql`` files with ``-- migrate:up`` / ``-- migrate:down`` sections, undone one at a
time with ``dbmate rollback``.

dbmate runs from the application's directory with the database URL, in dbmate's own form, in
``DATABASE_URL`` (the password only there), never dumping the schema file. The revision is the
highest version in ``schema_migrations``; each step is the SQL of the file's down section, classified
by the SQL classifier.
"""

from __future__ import annotations

import os
import re

from ansible_collections.release.rollback.plugins.module_utils import dbmigrate as _db
from ansible_collections.release.rollback.plugins.module_utils.dbtools import base

try:
    from urllib.parse import parse_qs, quote, urlsplit
except ImportError:  # pragma: no cover
    from urllib import quote  # type: ignore

    from urlparse import parse_qs, urlsplit  # type: ignore

_FILE = re.compile(r"^(\d+)_.*\.sql$")  # dbmate's own pattern
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_MARK = re.compile(r"^[ \t]*--[ \t]*migrate:(up|down)\b[^\n]*$", re.M)


def down_section(text):
    """The SQL of a dbmate file's ``-- migrate:down`` section; None when there is none."""
    if text is None:
        return None
    marks = list(_MARK.finditer(text))
    for n, m in enumerate(marks):
        if m.group(1) == "down":
            end = marks[n + 1].start() if n + 1 < len(marks) else len(text)
            return text[m.end() : end]
    return None


def classify_file(text):
    """Classify a dbmate migration file by its down section (see ``base.verdict``)."""
    if text is None:
        return base.verdict(irreversible=True, runnable=False, reasons=["the migration file cannot be read"])
    down = down_section(text)
    if down is None:
        return base.verdict(
            irreversible=True, runnable=False, reasons=["there is no -- migrate:down section: dbmate cannot run it"]
        )
    if _db.sql_is_empty(down):
        # dbmate would run nothing and forget the version: the database would claim a revision whose
        # schema it does not have. That cannot be approved into a rollback.
        return base.verdict(
            irreversible=True,
            runnable=False,
            reasons=["the -- migrate:down section is empty: dbmate rollback would only forget the migration"],
        )
    return _db.classify_sql_script(down)


class Dbmate(base.MigrationTool):
    """dbmate's migrations, rolled back one at a time with ``dbmate rollback``."""

    name = "dbmate"
    needs = "migrations"
    numeric = True
    engines = ("postgresql", "sqlite")
    runs = (
        "`dbmate rollback` one migration at a time, with the application's own dbmate "
        "(`node_modules/.bin/dbmate`), from its directory (`migrations:`), with `--no-dump-schema` and the URL "
        "in dbmate's form in `DATABASE_URL` (the password only there); the revision is the highest version in "
        "`schema_migrations`"
    )
    recognises = (
        "each file's `-- migrate:down` section with the SQL classifier (DROP TABLE/COLUMN, TRUNCATE, DELETE, "
        "UPDATE, SET NULL, type narrowing; what it cannot parse is unclassified); an empty or missing down "
        "section cannot run (dbmate would only forget the version)"
    )
    settings_doc = {
        "command": "The command that runs dbmate; default the application's node_modules/.bin/dbmate, else dbmate.",
        "table": "The migrations table (dbmate --migrations-table); default schema_migrations.",
        "migrations_dir": "The migrations directory, relative to the application's directory; default db/migrations.",
    }

    def __init__(self, module, conn, client):
        base.MigrationTool.__init__(self, module, conn, client)
        self.table = self.settings.get("table") or "schema_migrations"
        if not _TABLE.match(self.table):
            raise base.Fail("database.settings.table %r is not a table name" % self.table[:60])
        self.directory = os.path.join(self.cwd or "", self.settings.get("migrations_dir") or "db/migrations")
        self.applied = None

    def files(self):
        """``[(version, file name)]`` in dbmate's order (by file name)."""
        if not os.path.isdir(self.directory):
            raise base.Fail("the dbmate migrations directory %s does not exist" % self.directory)
        out = []
        for name in sorted(os.listdir(self.directory)):
            m = _FILE.match(name)
            if m:
                out.append((m.group(1), name))
        return out

    # -- the database, through the client the backup uses
    def current(self):
        self.applied = []
        if not self.client.has_table(self.table):
            return self.base
        self.applied = [str(r[0]) for r in self.client.rows("SELECT version FROM %s" % self.table)]
        numbers = [v for v in self.applied if v.isdigit()]
        if len(numbers) != len(self.applied):
            raise base.Fail(
                "%s holds versions that are not numbers (%s): dbmate did not write them"
                % (self.table, ", ".join(v for v in self.applied if not v.isdigit())[:200])
            )
        return max(numbers, key=int) if numbers else self.base

    def steps(self, current, target, live_schema=None):
        if current == target:
            return []
        files = self.files()
        versions = [version for version, _name in files]
        for rev in (current, target):
            if rev != self.base and rev not in versions:
                raise base.Fail("version %s has no migration file in %s" % (rev, self.directory))
        if self.applied is None:
            self.current()
        if target != self.base and target not in self.applied:
            raise base.Fail("version %s is not applied: dbmate cannot stop there" % target)
        if target != self.base and int(target) >= int(current):
            raise base.Fail(
                "version %s is not below the database's version %s: nothing to roll back" % (target, current)
            )
        # dbmate rolls back the newest applied file, in file order; the step below it is the previous one.
        applied = [(v, n) for v, n in files if v in self.applied]
        steps = []
        for i in range(len(applied) - 1, -1, -1):
            version, name = applied[i]
            if int(version) > int(current):
                continue
            if target != self.base and int(version) <= int(target):
                break
            source = os.path.join(self.directory, name)
            step = {
                "id": version,
                "revision": version,
                "to": applied[i - 1][0] if i > 0 else self.base,
                "source": os.path.relpath(source, self.cwd) if self.cwd else source,
            }
            step.update(classify_file(base.read_text(source)))
            steps.append(step)
        return steps

    # -- the command
    def dbmate(self):
        return self.find_command("dbmate", os.path.join("node_modules", ".bin", "dbmate"))

    def dbmate_url(self):
        """The URL in dbmate's form (postgres://, mysql://, sqlite:/path); the password only here."""
        c = self.conn
        if c["dialect"] == "sqlite":
            return "sqlite:" + os.path.abspath(self.client.sqlite_path())
        auth = base.userinfo(c)
        host = c.get("host") or ""
        query = {}
        if host.startswith("/"):
            query["socket"] = host
            host = ""
        port = ":%s" % c["port"] if c.get("port") and host else ""
        if c["dialect"] == "postgresql":
            asked = parse_qs(urlsplit(self.p["url"]).query).get("sslmode")
            query["sslmode"] = asked[0] if asked else "disable"
            scheme = "postgres"
        else:
            scheme = "mysql"
        url = "%s://%s%s%s/%s" % (scheme, auth, host, port, quote(c["database"], safe=""))
        if query:
            url += "?" + "&".join("%s=%s" % (k, quote(str(v), safe="/")) for k, v in sorted(query.items()))
        return url

    def run(self, args):
        argv = self.dbmate() + [
            "--no-dump-schema",
            "--migrations-dir",
            self.directory,
            "--migrations-table",
            self.table,
        ]
        env = {"DATABASE_URL": self.dbmate_url(), "DBMATE_NO_DUMP_SCHEMA": "true"}
        return self.command(argv + list(args), env=env)

    def downgrade(self, to, step):
        self.applied = None
        return self.run(["rollback"])


TOOL = Dbmate
