#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: db_migrate
short_description: Read, classify and roll back a database's migrations with Alembic, guarded and backed up
version_added: "0.1.0"
description:
  - Runs Alembic in the application's environment (its Python, its C(alembic.ini) and C(env.py)), so
    the application's models and settings load as they do at deploy time. Works with PostgreSQL,
    MariaDB/MySQL and SQLite URLs.
  - With O(state=status) it reads the current revision from the database and, given
    O(target_revision), lists the down steps in order, each classified as destructive (drops a table
    or column, truncates, deletes rows, narrows a type) or irreversible (empty downgrade, missing
    downgrade, C(NotImplementedError)).
  - With O(state=downgraded) it refuses, before touching the database, any irreversible step and any
    destructive step not named in O(approved_steps); then it takes a backup (C(pg_dump),
    C(mariadb-dump)/C(mysqldump), or an SQLite online copy) into O(backup_dir) with its sha256 and
    the restore command; then it downgrades one revision at a time, so a failure stops at the
    failing step and reports the exact revision reached (and, on a database without transactional
    DDL, the part of the failing step that was applied); then it checks the result (revision ==
    target, O(critical_tables) exist, O(assertions) hold).
  - The database URL is handed to C(env.py) in the C(DATABASE_URL) environment variable and the
    password to the dump tools in C(PGPASSWORD)/C(MYSQL_PWD), never on a command line; neither is
    returned or logged.
options:
  state:
    description: Read the revision and the down steps, or downgrade to O(target_revision).
    type: str
    choices: [status, downgraded]
    default: status
  tool:
    description:
      - C(alembic) runs the application's Alembic; C(sql) runs C(NNN_name.down.sql) scripts itself, in the
        golang-migrate convention (table C(schema_migrations(version, dirty))), with C(psql), C(mariadb) or
        Python's sqlite3.
    type: str
    choices: [alembic, sql, sqitch]
    default: alembic
  config:
    description: The application's C(alembic.ini) (O(tool=alembic)).
    type: path
  migrations:
    description:
      - The directory of C(NNN_name.up.sql) / C(NNN_name.down.sql) scripts (O(tool=sql)), or the sqitch
        project (C(sqitch.plan), C(revert/)) for O(tool=sqitch), which sqitch reverts one change at a time.
    type: path
  registry:
    description: The sqitch registry (C(--registry)), when it is not the default.
    type: str
  url:
    description: SQLAlchemy database URL, passed to C(env.py) as C(DATABASE_URL).
    type: str
    required: true
  python:
    description: The application's Python interpreter (defaults to the one running this module).
    type: path
  target_revision:
    description: The revision to downgrade to (C(base) for none).
    type: str
  expected_revision:
    description: The revision the plan was made at; the module refuses to run from any other.
    type: str
  approved_steps:
    description: Ids (revisions) of destructive or irreversible down steps a human approved.
    type: list
    elements: str
    default: []
  backup_dir:
    description: Where the backup taken before the first down step goes (created with mode 0700).
    type: path
  app:
    description: The application's name, used in the backup's file name.
    type: str
    default: app
  critical_tables:
    description: Tables that must exist after the rollback.
    type: list
    elements: str
    default: []
  assertions:
    description:
      - SQL checks run after the rollback. Each has C(sql) (its first column of the first row is
        compared), C(expect) (a value compared as text, or V(true) for any truthy result) and an
        optional C(name).
    type: list
    elements: dict
    default: []
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
    backup_dir: /var/backups/shop
    critical_tables: [orders, customers]
    assertions:
      - {name: orders kept, sql: "select count(*) > 0 from orders", expect: true}
"""

RETURN = r"""
current:
  description: The revision the database is at after the module ran.
  returned: always
  type: str
before:
  description: The revision before the module ran.
  returned: always
  type: str
steps:
  description: The down steps from the current revision to the target, in order, classified.
  returned: when target_revision is given
  type: list
database:
  description: The stage's record (no credentials) - steps, steps applied, backup, integrity checks, half-applied state.
  returned: always
  type: dict
"""

import json
import os
import re
import sqlite3
import sys
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.release.rollback.plugins.module_utils import dbmigrate as _db

_BASE = "base"


class _Fail(Exception):
    def __init__(self, msg, **extra):
        Exception.__init__(self, msg)
        self.msg = msg
        self.extra = extra


class Alembic:
    def __init__(self, module, conn):
        self.module = module
        self.p = module.params
        self.conn = conn
        self.cwd = os.path.dirname(self.p["config"])

    def _env(self):
        return {"DATABASE_URL": self.p["url"]}

    def _python(self):
        return self.p["python"] or sys.executable

    def run(self, args):
        cmd = [self._python(), "-m", "alembic", "-c", self.p["config"]] + args
        return self.module.run_command(cmd, cwd=self.cwd, environ_update=self._env())

    def current(self):
        rc, out, err = self.run(["current"])
        if rc != 0:
            raise _Fail("alembic current failed: %s" % _last_line(err or out))
        revs = []
        for line in out.splitlines():
            word = line.strip().split(" ", 1)[0] if line.strip() else ""
            if word and all(c.isalnum() or c == "_" for c in word):
                revs.append(word)
        if len(revs) > 1:
            raise _Fail("the database has several heads (%s): merge or pick one" % ", ".join(revs))
        return revs[0] if revs else _BASE

    def helper(self, **request):
        rc, out, err = self.module.run_command(
            [self._python(), "-c", _db.HELPER],
            cwd=self.cwd,
            environ_update=self._env(),
            data=json.dumps(request),
        )
        if rc != 0:
            raise _Fail("reading the database failed: %s" % _last_line(err or out))
        try:
            return json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise _Fail("reading the database gave no answer: %s" % _last_line(err or out)) from None

    def steps(self, current, target, live_schema=None):
        """The down steps from ``current`` to ``target``, newest first, classified."""
        if current == target:
            return []
        answer = self.helper(config=self.p["config"], revisions=[current, target])
        if answer.get("error"):
            raise _Fail(
                "revision %s is not below the database's revision %s in the migration scripts (%s)"
                % (target, current, answer["error"])
            )
        steps = []
        for rev in answer["revisions"]:
            if rev.get("merge"):
                verdict = _db._verdict(False, True, False, ["merge revision of %s" % ", ".join(rev["down"])])
                to = ",".join(rev["down"])
            else:
                try:
                    with open(rev["path"], encoding="utf-8") as fh:
                        source = fh.read()
                except (OSError, TypeError):
                    source = None
                if source is None:
                    verdict = _db._verdict(False, True, False, ["the revision file cannot be read"])
                else:
                    verdict = _db.classify_alembic_source(source, live_schema)
                to = rev["down"] or _BASE
            step = {"id": rev["revision"], "revision": rev["revision"], "to": to}
            step.update(verdict)
            steps.append(step)
        return steps

    def downgrade(self, to, step=None):
        return self.run(["downgrade", to])

    def require_clean(self):
        return None


_SQL_FILE = re.compile(r"^(\d+)_(.+)\.(up|down)\.sql$")
_SCHEMA_SQL = {
    "postgresql": (
        "SELECT table_name, column_name, data_type || coalesce('(' || character_maximum_length || ')', '') "
        "FROM information_schema.columns WHERE table_schema = current_schema() ORDER BY 1, 2",
        "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() ORDER BY 1, 2",
    ),
    "mysql": (
        "SELECT table_name, column_name, column_type FROM information_schema.columns "
        "WHERE table_schema = DATABASE() ORDER BY 1, 2",
        "SELECT table_name, index_name, GROUP_CONCAT(column_name ORDER BY seq_in_index) "
        "FROM information_schema.statistics WHERE table_schema = DATABASE() GROUP BY table_name, index_name",
    ),
}


class SqlScripts:
    """Down scripts in the golang-migrate convention, run by the module itself.

    ``schema_migrations`` holds one row ``(version, dirty)``. Like golang-migrate, a step records
    the version it goes to as dirty, runs the script, then marks it clean; on PostgreSQL and SQLite
    the three run in one transaction, so a failed step leaves nothing behind.
    """

    def __init__(self, module, conn):
        self.module = module
        self.p = module.params
        self.conn = conn
        self.cwd = self.p["migrations"]
        self.dirty = None
        self.versions = self._scan()

    def _scan(self):
        if not os.path.isdir(self.cwd):
            raise _Fail("the migrations directory %s does not exist" % self.cwd)
        versions = {}
        for name in os.listdir(self.cwd):
            m = _SQL_FILE.match(name)
            if m:
                entry = versions.setdefault(int(m.group(1)), {"name": m.group(2)})
                entry[m.group(3)] = os.path.join(self.cwd, name)
        return versions

    # -- talking to the database
    def _client(self):
        c = self.conn
        if c["dialect"] == "postgresql":
            psql = self.module.get_bin_path("psql", required=True)
            argv = [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-A", "-t", "-F", "\t"]
            for flag, key in (("-h", "host"), ("-p", "port"), ("-U", "user")):
                if c.get(key):
                    argv += [flag, str(c[key])]
            return argv + ["-d", c["database"]], ({"PGPASSWORD": c["password"]} if c.get("password") else {})
        client = self.module.get_bin_path("mariadb") or self.module.get_bin_path("mysql", required=True)
        argv = [client, "--batch", "--skip-column-names"]
        for flag, key in (("--host", "host"), ("--port", "port"), ("--user", "user")):
            if c.get(key):
                argv += [flag, str(c[key])]
        return argv + [c["database"]], ({"MYSQL_PWD": c["password"]} if c.get("password") else {})

    def _sqlite(self):
        path = self.conn["path"]
        return sqlite3.connect(path if os.path.isabs(path) else os.path.join(self.cwd, path), isolation_level=None)

    def rows(self, sql):
        if self.conn["dialect"] == "sqlite":
            db = self._sqlite()
            try:
                return [tuple(r) for r in db.execute(sql).fetchall()]
            finally:
                db.close()
        argv, env = self._client()
        flag = "-c" if self.conn["dialect"] == "postgresql" else "-e"
        rc, out, err = self.module.run_command(argv + [flag, sql], environ_update=env)
        if rc != 0:
            raise _Fail("query failed: %s" % _last_line(err or out))
        return [tuple(line.split("\t")) for line in out.splitlines() if line.strip()]

    def script(self, body):
        """Run SQL text; returns (rc, out, err) like a command."""
        if self.conn["dialect"] == "sqlite":
            db = self._sqlite()
            try:
                db.executescript("BEGIN;\n%s\nCOMMIT;" % body)
                return 0, "", ""
            except sqlite3.Error as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                return 1, "", str(exc)
            finally:
                db.close()
        argv, env = self._client()
        if self.conn["dialect"] == "postgresql":
            argv = argv + ["--single-transaction"]
        return self.module.run_command(argv, environ_update=env, data=body)

    # -- the tool interface
    def _has_table(self):
        d = self.conn["dialect"]
        if d == "sqlite":
            sql = "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
        elif d == "postgresql":
            sql = "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() " \
                "AND table_name = 'schema_migrations'"
        else:
            sql = "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() " \
                "AND table_name = 'schema_migrations'"
        return str(self.rows(sql)[0][0]) != "0"

    def current(self):
        self.dirty = None
        if not self._has_table():
            return _BASE
        rows = self.rows("SELECT version, dirty FROM schema_migrations")
        if not rows:
            return _BASE
        version, dirty = int(rows[0][0]), str(rows[0][1]).lower() in ("1", "t", "true")
        rev = _BASE if version < 0 else str(version)
        if dirty:
            self.dirty = {"version": rev}
        return rev

    def require_clean(self):
        if self.dirty:
            raise _Fail(
                "schema_migrations is dirty at version %s: a migration stopped half-way and the schema is in an "
                "unknown state. Inspect it, fix it by hand, then mark the version clean (migrate force VERSION); "
                "nothing was changed" % self.dirty["version"],
                record={"dirty": self.dirty},
            )

    def steps(self, current, target, live_schema=None):
        if current == target:
            return []
        known = sorted(self.versions)
        for rev in (current, target):
            if rev != _BASE and (not rev.isdigit() or int(rev) not in self.versions):
                raise _Fail("version %s has no migration scripts in %s" % (rev, self.cwd))
        low = -1 if target == _BASE else int(target)
        if current != _BASE and int(current) < low:
            raise _Fail("version %s is above the database's version %s: nothing to roll back" % (target, current))
        steps = []
        for i in range(len(known) - 1, -1, -1):
            v = known[i]
            if current == _BASE or v > int(current) or v <= low:
                continue
            path = self.versions[v].get("down")
            text = None
            if path:
                with open(path, encoding="utf-8") as fh:
                    text = fh.read()
            step = {"id": str(v), "revision": str(v), "to": str(known[i - 1]) if i > 0 else _BASE}
            step.update(_db.classify_sql_script(text))
            step["script"] = os.path.basename(path) if path else None
            steps.append(step)
        return steps

    def _set_version(self, rev, dirty):
        d = self.conn["dialect"]
        dirty_sql = ("1" if dirty else "0") if d != "postgresql" else ("TRUE" if dirty else "FALSE")
        sql = "DELETE FROM schema_migrations;\n"
        if rev != _BASE or dirty:
            sql += "INSERT INTO schema_migrations (version, dirty) VALUES (%d, %s);\n" % (
                -1 if rev == _BASE else int(rev),
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

    def helper(self, schema=False, queries=None, **_ignored):
        out = {}
        if schema:
            out["schema"] = self.schema()
        if queries:
            out["results"] = []
            for sql in queries:
                try:
                    rows = self.rows(sql)
                    value = rows[0][0] if rows else None
                    out["results"].append({"value": value})
                except (_Fail, sqlite3.Error) as exc:
                    out["results"].append({"error": str(exc)[:300]})
        return out

    def schema(self):
        tables = {}
        if self.conn["dialect"] == "sqlite":
            names = [r[0] for r in self.rows("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1")]
            for t in names:
                tables[t] = {r[1]: r[2] for r in self.rows("PRAGMA table_info(\"%s\")" % t.replace('"', '""'))}
                for r in self.rows("PRAGMA index_list(\"%s\")" % t.replace('"', '""')):
                    tables[t]["@index " + str(r[1])] = str(r[3])
            return tables
        cols, idx = _SCHEMA_SQL[self.conn["dialect"]]
        for row in self.rows(cols):
            tables.setdefault(row[0], {})[row[1]] = row[2]
        for row in self.rows(idx):
            tables.setdefault(row[0], {})["@index " + row[1]] = row[2]
        return tables


class Sqitch(SqlScripts):
    """A sqitch project (C(sqitch.plan), C(revert/*.sql)), reverted one change at a time with sqitch itself."""

    _ENGINES = {"postgresql": "pg", "mysql": "mysql", "sqlite": "sqlite"}

    def __init__(self, module, conn):
        self.module = module
        self.p = module.params
        self.conn = conn
        self.cwd = self.p["migrations"]
        self.dirty = None
        self.sqitch = module.get_bin_path("sqitch")
        if not self.sqitch:
            raise _Fail("sqitch is not installed on the database host: install it (Debian package sqitch)")
        self.changes = self._plan()

    def _plan(self):
        path = os.path.join(self.cwd, "sqitch.plan")
        if not os.path.isfile(path):
            raise _Fail("the sqitch plan %s does not exist" % path)
        changes = []
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                word = line.strip().split(" ", 1)[0] if line.strip() else ""
                if not word or word[0] in "%#@":
                    continue
                if word in changes:
                    raise _Fail("change %s is reworked in the sqitch plan: roll it back with sqitch by hand" % word)
                changes.append(word)
        return changes

    def _target(self):
        c = self.conn
        if c["dialect"] == "sqlite":
            path = c["path"] if os.path.isabs(c["path"]) else os.path.join(self.cwd, c["path"])
            return "db:sqlite:" + path
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
            return _BASE
        if rc != 0:
            raise _Fail("sqitch status failed: %s" % _last_line(err or out))
        for line in out.splitlines():
            if line.startswith("# Name:"):
                return line.split(":", 1)[1].strip()
        raise _Fail("sqitch status did not name the deployed change: %s" % _last_line(out))

    def require_clean(self):
        return None

    def steps(self, current, target, live_schema=None):
        if current == target:
            return []
        for rev in (current, target):
            if rev != _BASE and rev not in self.changes:
                raise _Fail("change %s is not in the sqitch plan %s/sqitch.plan" % (rev, self.cwd))
        top = self.changes.index(current) if current != _BASE else -1
        low = self.changes.index(target) if target != _BASE else -1
        if top < low:
            raise _Fail("change %s comes after the deployed change %s: nothing to revert" % (target, current))
        steps = []
        for i in range(top, low, -1):
            name = self.changes[i]
            path = os.path.join(self.cwd, "revert", name + ".sql")
            text = None
            if os.path.isfile(path):
                with open(path, encoding="utf-8") as fh:
                    text = fh.read()
            step = {"id": name, "revision": name, "to": self.changes[i - 1] if i > 0 else _BASE}
            step.update(_db.classify_sql_script(text))
            if text is None:
                step["reasons"] = ["there is no revert script"]
            steps.append(step)
        return steps

    def downgrade(self, to, step=None):
        return self._sqitch(["revert", "-y"] + (["--to", to] if to != _BASE else []))


def _last_line(text):
    lines = [x for x in (text or "").strip().splitlines() if x.strip()]
    return lines[-1][-500:] if lines else "no output"


def _stamp():
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def backup(module, conn, revision, cwd):
    p = module.params
    directory = p["backup_dir"]
    if not directory:
        raise _Fail("no backup location is configured: set database.backup_dir in the manifest; nothing was changed")
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise _Fail("the backup directory %s cannot be created (%s); nothing was changed" % (directory, exc)) from None
    path = os.path.join(directory, _db.backup_name(p["app"], conn, revision, _stamp()))
    old_umask = os.umask(0o077)
    try:
        if conn["dialect"] == "sqlite":
            src_path = conn["path"] if os.path.isabs(conn["path"]) else os.path.join(cwd, conn["path"])
            if not os.path.isfile(src_path):
                raise _Fail("the SQLite database %s does not exist; nothing was changed" % src_path)
            src = sqlite3.connect(src_path)
            dst = sqlite3.connect(path)
            try:
                src.backup(dst)
            finally:
                dst.close()
                src.close()
            tool = "sqlite3 online backup"
            restore = _db.sqlite_restore_command(path, src_path)
        else:
            names = ["pg_dump"] if conn["dialect"] == "postgresql" else ["mariadb-dump", "mysqldump"]
            dump = None
            for name in names:
                dump = module.get_bin_path(name)
                if dump:
                    break
            if not dump:
                raise _Fail(
                    "%s is not installed on the database host: install the database client tools; nothing was changed"
                    % " or ".join(names)
                )
            argv, env, restore = _db.backup_commands(conn, path, dump)
            rc, _out, err = module.run_command(argv, environ_update=env)
            if rc != 0:
                raise _Fail(
                    "the backup with %s failed: %s; nothing was changed" % (os.path.basename(dump), _last_line(err))
                )
            tool = os.path.basename(dump)
    finally:
        os.umask(old_umask)
    return {
        "path": path,
        "sha256": _db.sha256_file(path),
        "size": os.path.getsize(path),
        "tool": tool,
        "revision": revision,
        "restore_command": restore,
    }


def integrity(tool, current, target, critical_tables, assertions):
    """The checks after the rollback: revision, critical tables, the user's SQL assertions."""
    checks = [
        {
            "check": "revision == %s" % target,
            "ok": current == target,
            "detail": "database at %s" % current,
        }
    ]
    answer = {}
    if critical_tables or assertions:
        answer = tool.helper(schema=bool(critical_tables), queries=[a.get("sql") for a in assertions])
    tables = answer.get("schema") or {}
    for table in critical_tables:
        checks.append(
            {
                "check": "table %s exists" % table,
                "ok": table in tables,
                "detail": "present" if table in tables else "missing",
            }
        )
    results = answer.get("results") or []
    for i, assertion in enumerate(assertions):
        res = results[i] if i < len(results) else {"error": "no answer"}
        name = assertion.get("name") or assertion.get("sql")
        if "error" in res:
            checks.append({"check": name, "ok": False, "detail": "error: %s" % res["error"]})
            continue
        ok = _db.check_assertion(assertion, res.get("value"))
        checks.append(
            {
                "check": name,
                "ok": ok,
                "detail": "got %r, expected %r" % (res.get("value"), assertion.get("expect", True)),
            }
        )
    return checks


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", default="status", choices=["status", "downgraded"]),
            tool=dict(type="str", default="alembic", choices=["alembic", "sql", "sqitch"]),
            config=dict(type="path"),
            migrations=dict(type="path"),
            registry=dict(type="str"),
            url=dict(type="str", required=True, no_log=True),
            python=dict(type="path"),
            target_revision=dict(type="str"),
            expected_revision=dict(type="str"),
            approved_steps=dict(type="list", elements="str", default=[]),
            backup_dir=dict(type="path"),
            app=dict(type="str", default="app"),
            critical_tables=dict(type="list", elements="str", default=[]),
            assertions=dict(type="list", elements="dict", default=[]),
        ),
        required_if=[
            ("state", "downgraded", ("target_revision",)),
            ("tool", "alembic", ("config",)),
            ("tool", "sql", ("migrations",)),
            ("tool", "sqitch", ("migrations",)),
        ],
        supports_check_mode=True,
    )
    p = module.params
    record = {"tool": p["tool"], "to_revision": p["target_revision"]}
    try:
        conn = _db.parse_url(p["url"])
    except ValueError as exc:
        module.fail_json(msg=str(exc), database=record)
    if conn.get("password"):
        module.no_log_values.add(conn["password"])
    record["dialect"] = conn["dialect"]
    if p["tool"] == "alembic" and not os.path.isfile(p["config"]):
        module.fail_json(msg="the Alembic configuration %s does not exist" % p["config"], database=record)
    state = {"before": None, "current": None}
    try:
        tool = {"alembic": Alembic, "sql": SqlScripts, "sqitch": Sqitch}[p["tool"]](module, conn)
        _run(module, tool, conn, record, state)
    except _Fail as exc:
        record.update(exc.extra.pop("record", {}))
        record["current"] = state["current"]
        record["from_revision"] = state["before"]
        module.fail_json(msg=exc.msg, before=state["before"], current=state["current"], database=record, **exc.extra)


def _on_planned_path(tool, planned_from, current, target):
    """Whether ``current`` lies between the plan's revision and the target (a run stopped part-way):
    resuming then goes on from there. A database found anywhere else has moved since the plan."""
    try:
        return current in [step["revision"] for step in tool.steps(planned_from, target, {})]
    except Exception:  # the plan's revision is not in this history: not our path
        return False


def _run(module, tool, conn, record, state):
    p = module.params
    target = p["target_revision"]
    before = tool.current()
    state["before"] = state["current"] = before
    record["from_revision"] = before
    tool.require_clean()
    if target is None:
        record["current"] = before
        module.exit_json(changed=False, before=before, current=before, database=record)
    live = tool.helper(schema=True).get("schema") if before != target else {}
    steps = tool.steps(before, target, live)
    record["steps"] = steps
    if p["state"] == "status":
        record["current"] = before
        module.exit_json(changed=False, before=before, current=before, steps=steps, database=record)

    if p["expected_revision"] and before not in (p["expected_revision"], target) and not _on_planned_path(
        tool, p["expected_revision"], before, target
    ):
        raise _Fail(
            "the database is at revision %s, but the plan was made at revision %s: build a new plan; "
            "nothing was changed" % (before, p["expected_revision"]),
            refused=True,
        )
    problem = _db.guard_problem(steps, p["approved_steps"])
    if problem:
        raise _Fail("refused before touching the database: %s" % problem, refused=True)
    if not steps:
        record["integrity"] = integrity(tool, before, target, p["critical_tables"], p["assertions"])
        record["current"] = before
        _finish(module, record, changed=False, before=before, current=before)
    if module.check_mode:
        record["current"] = before
        module.exit_json(changed=True, before=before, current=before, steps=steps, database=record)

    record["backup"] = backup(module, conn, before, tool.cwd)
    applied = []
    record["applied"] = applied
    for step in steps:
        # A snapshot before each step tells a failed step that left part of its DDL behind (MariaDB and
        # Alembic's SQLite run DDL outside a transaction) from one that was rolled back whole.
        snapshot = tool.helper(schema=True).get("schema")
        rc, out, err = tool.downgrade(step["to"], step)
        reached = tool.current()
        state["current"] = reached
        if rc != 0 or reached != step["to"] or getattr(tool, "dirty", None):
            why = _last_line(err or out) if rc != 0 else "the tool left the database at %s" % reached
            extra = {"failed_step": _db.step_label(step)}
            msg = "down step %s failed: %s. The database is at revision %s" % (_db.step_label(step), why, reached)
            if getattr(tool, "dirty", None):
                extra["dirty"] = tool.dirty
                msg = "down step %s failed: %s. schema_migrations says version %s, dirty: the down script of %s " \
                    "stopped part-way, so the schema is between %s and %s" % (
                        _db.step_label(step), why, reached, step["revision"], step["revision"], reached)
            if snapshot is not None and (reached == step["revision"] or "dirty" in extra):
                changes = _db.schema_diff(snapshot, tool.helper(schema=True).get("schema"))
                if changes:
                    extra["half_applied"] = {"revision": step["revision"], "changes": changes}
                    msg += (
                        " with part of step %s applied (its DDL is not transactional): %s. Finish or undo those "
                        "changes by hand, or restore the backup" % (_db.step_label(step), "; ".join(changes))
                    )
            msg += "; no further down step ran; the backup is %s" % record["backup"]["path"]
            raise _Fail(msg, changed=bool(applied) or "half_applied" in extra, record=extra)
        applied.append(_db.step_label(step))
    record["current"] = state["current"]
    record["integrity"] = integrity(tool, state["current"], target, p["critical_tables"], p["assertions"])
    _finish(module, record, changed=True, before=before, current=state["current"])


def _finish(module, record, changed, before, current):
    failed = [c for c in record.get("integrity") or [] if not c["ok"]]
    if failed:
        raise _Fail(
            "integrity check failed after the rollback: %s"
            % "; ".join("%s (%s)" % (c["check"], c["detail"]) for c in failed),
            changed=changed,
        )
    module.exit_json(changed=changed, before=before, current=current, database=record)


if __name__ == "__main__":
    main()
