#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: db_migrate
short_description: Read, classify and roll back a database's migrations, guarded, backed up and checked by identity
version_added: "1.0.0"
description:
  - Runs the migration tool against the database the way the application does; for Alembic, the
    application's Python, its C(alembic.ini) and C(env.py), with the URL in C(DATABASE_URL) and in the
    application's own variable O(url_env). Works with PostgreSQL, MariaDB/MySQL and SQLite.
  - Before anything else it proves that the backup, the migration and the integrity checks reach the
    same database, by identity rather than by URL text (PostgreSQL's system identifier, database name
    and oid; MariaDB/MySQL's host name, port, data directory and database; an SQLite file's device and
    inode), reading what C(env.py) really connects to. If they differ it refuses and names both. An
    SQLite file that does not exist is an error; it is never created.
  - With O(state=status) it reads the current revision and, given O(target_revision), lists the down
    steps in order, each classified as destructive (drops a table or column, truncates, deletes or
    overwrites rows, sets a column to NULL, narrows a type), irreversible (empty or missing downgrade,
    any C(raise)) or unclassified (what the classifier cannot read; it needs the same approval as a
    destructive step).
  - With O(state=downgraded) it refuses, before touching the database, any step that cannot run and any
    step needing approval that is not in O(approved_steps); then it takes a backup (C(pg_dump),
    C(mariadb-dump)/C(mysqldump), or an SQLite online copy) into O(backup_dir) and verifies it (sha256,
    and C(pg_restore --list), the dump's completion line, or C(PRAGMA integrity_check), each with every
    table of the database). The first backup of a run (O(run_id)) is the run's restore point, kept in a
    record next to the backups; a retry of the same run takes an additional backup, labelled with the
    revision the database is at, and never replaces the restore point. Then it downgrades one revision
    at a time, so a failure stops at the failing step and reports the exact revision reached (and, on a
    database without transactional DDL, the part of the failing step that was applied); a later attempt
    refuses to go on from a half-applied step until the schema is put right. Then it checks the result
    (revision == target, O(critical_tables) exist, O(assertions) hold).
  - The password goes to the tools in the environment (C(DATABASE_URL), C(PGPASSWORD), C(MYSQL_PWD),
    C(SQITCH_PASSWORD)), never on a command line; it is never returned or logged, and is redacted from the
    tools' error output, of which the meaningful end is returned.
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
    description: SQLAlchemy database URL, passed to C(env.py) as C(DATABASE_URL) (and as O(url_env)).
    type: str
    required: true
  url_env:
    description:
      - The environment variable the application's C(env.py) reads its URL from (for example C(APP_DB_URL)),
        when it is not C(DATABASE_URL). The module sets it to O(url), so Alembic migrates the database the
        backup is taken of; the identity check catches an C(env.py) that still goes elsewhere.
    type: str
  python:
    description: The application's Python interpreter (defaults to the one running this module).
    type: path
  target_revision:
    description: The revision to downgrade to (C(base) for none).
    type: str
  expected_revision:
    description: The revision the plan was made at; the module refuses to run from any other.
    type: str
  expected_identity:
    description: The identity of the database the plan was made for; the module refuses any other database.
    type: dict
  run_id:
    description:
      - The rollback run's id. The run's restore point (its first backup) and its other backups are kept in
        a record in O(backup_dir) under this id, so every attempt of the run finds and keeps them.
    type: str
  approved_steps:
    description: Ids (revisions) of destructive, irreversible or unclassified down steps a human approved.
    type: list
    elements: str
    default: []
  backup_dir:
    description: Where the backups go (created with mode 0700), with the run's record.
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
requirements:
  - For O(tool=alembic), Alembic importable by the application's Python (O(python)).
  - For O(tool=sqitch), C(sqitch).
  - For PostgreSQL, C(psql); C(pg_dump) and C(pg_restore) for the backup before a down step.
  - For MariaDB or MySQL, C(mariadb) (or C(mysql)); C(mariadb-dump) (or C(mysqldump)) for the backup.
  - For SQLite, Python's C(sqlite3) module (no external command).
attributes:
  check_mode:
    description: Can run in check mode and return the changed status prediction without modifying the target.
    support: full
    details:
      - Reads the revision and classifies the down steps (read-only queries and the integrity assertions); no
        backup is taken, no run record is written and no migration runs.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode) when in diff mode.
    support: none
  platform:
    description: Target OS/families that can be operated against.
    support: N/A
    platforms: posix
author:
  - release-rollback contributors (@release-rollback)
"""

EXAMPLES = r"""
- name: Downgrade to the previous release's revision
  release.rollback.db_migrate:
    state: downgraded
    config: /srv/shop/current/alembic.ini
    url: "{{ vault_shop_db_url }}"
    url_env: SHOP_DATABASE_URL
    target_revision: a1b2c3
    run_id: "{{ rollback_run_id }}"
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
  description:
    - The stage's record (no credentials) - steps, steps applied in the run, C(identity) (the database
      proven to be the one the backup, the migration and the checks reach), C(restore_point) (the run's
      first backup, verified, with its restore command), C(backups) (every backup of the run, each with
      the revision it holds), C(half_applied), C(attempt), C(error) (the meaningful end of the tool's
      error output), integrity checks. C(backup) is the restore point too.
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

try:
    from urllib.parse import quote
except ImportError:  # pragma: no cover
    from urllib import quote  # type: ignore

_BASE = "base"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


class _Fail(Exception):
    def __init__(self, msg, **extra):
        Exception.__init__(self, msg)
        self.msg = msg
        self.extra = extra


class Client:
    """The database's own client: ``psql``, ``mariadb`` or Python's sqlite3, with the manifest's URL.

    The backup tools use the same connection parameters, so what this client reads (revision, schema,
    identity) is what the backup holds. The ``sql`` tool migrates through it too.
    """

    def __init__(self, module, conn, cwd):
        self.module = module
        self.conn = conn
        self.cwd = cwd
        self.secrets = [conn["password"]] if conn.get("password") else []

    def sqlite_path(self):
        path = self.conn["path"]
        return path if os.path.isabs(path) else os.path.join(self.cwd or os.getcwd(), path)

    def require_file(self):
        if self.conn["dialect"] == "sqlite" and not os.path.isfile(self.sqlite_path()):
            raise _Fail(
                "the SQLite database file %s does not exist: check the database URL (it was not created); "
                "nothing was changed" % self.sqlite_path()
            )

    def _sqlite(self):
        self.require_file()
        # mode=rw: never create a database file that is not there.
        uri = "file:%s?mode=rw" % quote(os.path.abspath(self.sqlite_path()))
        return sqlite3.connect(uri, uri=True, isolation_level=None)

    def _argv(self):
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

    def tail(self, text):
        return _db.error_tail(text, self.secrets)

    def rows(self, sql):
        if self.conn["dialect"] == "sqlite":
            db = self._sqlite()
            try:
                return [tuple(r) for r in db.execute(sql).fetchall()]
            finally:
                db.close()
        argv, env = self._argv()
        flag = "-c" if self.conn["dialect"] == "postgresql" else "-e"
        rc, out, err = self.module.run_command(argv + [flag, sql], environ_update=env)
        if rc != 0:
            raise _Fail("query failed: %s" % self.tail(err or out), detail=self.tail(err or out))
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
        argv, env = self._argv()
        if self.conn["dialect"] == "postgresql":
            argv = argv + ["--single-transaction"]
        return self.module.run_command(argv, environ_update=env, data=body)

    def identity(self):
        if self.conn["dialect"] == "sqlite":
            self.require_file()
            return _db.sqlite_identity(self.sqlite_path())
        rows = self.rows(_db.IDENTITY_SQL[self.conn["dialect"]])
        if not rows:
            raise _Fail("the database did not say which database it is")
        return _db.identity_from_row(self.conn["dialect"], rows[0])

    def schema(self):
        tables = {}
        if self.conn["dialect"] == "sqlite":
            names = [r[0] for r in self.rows("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1")]
            for t in names:
                tables[t] = {r[1]: r[2] for r in self.rows('PRAGMA table_info("%s")' % t.replace('"', '""'))}
                for r in self.rows('PRAGMA index_list("%s")' % t.replace('"', '""')):
                    tables[t]["@index " + str(r[1])] = str(r[3])
            return tables
        cols, idx = _SCHEMA_SQL[self.conn["dialect"]]
        for row in self.rows(cols):
            tables.setdefault(row[0], {})[row[1]] = row[2]
        for row in self.rows(idx):
            tables.setdefault(row[0], {})["@index " + row[1]] = row[2]
        return tables

    def queries(self, queries):
        results = []
        for sql in queries or []:
            try:
                rows = self.rows(sql)
                results.append({"value": rows[0][0] if rows else None})
            except (_Fail, sqlite3.Error) as exc:
                results.append({"error": str(exc)[:300]})
        return results

    # -- backups
    def dump(self, path):
        """Back the database up into ``path``; returns (tool, restore command)."""
        conn = self.conn
        if conn["dialect"] == "sqlite":
            src = self._sqlite()
            dst = sqlite3.connect(path)
            try:
                src.backup(dst)
            finally:
                dst.close()
                src.close()
            return "sqlite3 online backup", _db.sqlite_restore_command(path, self.sqlite_path())
        names = ["pg_dump"] if conn["dialect"] == "postgresql" else ["mariadb-dump", "mysqldump"]
        dump = None
        for name in names:
            dump = self.module.get_bin_path(name)
            if dump:
                break
        if not dump:
            raise _Fail(
                "%s is not installed on the database host: install the database client tools; nothing was changed"
                % " or ".join(names)
            )
        argv, env, restore = _db.backup_commands(conn, path, dump)
        rc, out, err = self.module.run_command(argv, environ_update=env)
        if rc != 0:
            why = self.tail(err or out)
            raise _Fail(
                "the backup with %s failed: %s; nothing was changed" % (os.path.basename(dump), why), detail=why
            )
        return os.path.basename(dump), restore

    def verify(self, path, tables):
        """Check a backup can be restored and holds every table; returns (ok, how it was checked)."""
        tables = sorted(t for t in tables or ())
        if self.conn["dialect"] == "postgresql":
            pg_restore = self.module.get_bin_path("pg_restore")
            if not pg_restore:
                return False, "pg_restore is not installed on the database host: the archive could not be read"
            rc, out, err = self.module.run_command([pg_restore, "--list", path])
            if rc != 0:
                return False, "pg_restore --list could not read the archive: %s" % self.tail(err or out)
            found = _db.pg_archive_tables(out)
            missing = _db.missing_tables(tables, found)
            if missing:
                return False, "pg_restore --list: the archive lacks table(s) %s" % ", ".join(missing)
            entries = len([x for x in out.splitlines() if x and not x.startswith(";")])
            return True, "pg_restore --list read the archive (%d entries) with all %d tables" % (entries, len(tables))
        if self.conn["dialect"] == "mysql":
            found, complete = _db.mysql_dump_tables(path)
            if not complete:
                return False, "the dump does not end with its 'Dump completed' line: it is cut short"
            missing = _db.missing_tables(tables, found)
            if missing:
                return False, "the dump lacks table(s) %s" % ", ".join(missing)
            return True, "the dump is complete (its 'Dump completed' line is there) and creates all %d tables" % len(
                tables
            )
        copy = sqlite3.connect("file:%s?mode=ro" % quote(os.path.abspath(path)), uri=True)
        try:
            check = copy.execute("PRAGMA integrity_check").fetchone()[0]
            found = {r[0] for r in copy.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.Error as exc:
            return False, "the copy cannot be opened: %s" % exc
        finally:
            copy.close()
        if check != "ok":
            return False, "PRAGMA integrity_check on the copy: %s" % check
        missing = _db.missing_tables(tables, found)
        if missing:
            return False, "the copy lacks table(s) %s" % ", ".join(missing)
        return True, "PRAGMA integrity_check is ok on the copy, which has all %d tables" % len(tables)


class Alembic:
    """The application's Alembic, run with its Python, its alembic.ini and its env.py."""

    def __init__(self, module, conn, client):
        self.module = module
        self.p = module.params
        self.conn = conn
        self.client = client
        self.cwd = os.path.dirname(self.p["config"])
        self.seen = None
        # What the last current() read besides the revision (schema, identity, steps down to the target);
        # inspect() and steps() each take their part once, and a downgrade empties it.
        self._read = {}

    def _env(self):
        env = {"DATABASE_URL": self.p["url"]}
        if self.p.get("url_env"):
            env[self.p["url_env"]] = self.p["url"]
        return env

    def _python(self):
        return self.p["python"] or sys.executable

    def run(self, args):
        cmd = [self._python(), "-m", "alembic", "-c", self.p["config"]] + args
        return self.module.run_command(cmd, cwd=self.cwd, environ_update=self._env())

    def helper(self, **request):
        request.setdefault("config", self.p["config"])
        request["identity_sql"] = _db.IDENTITY_SQL
        rc, out, err = self.module.run_command(
            [self._python(), "-c", _db.HELPER],
            cwd=self.cwd,
            environ_update=self._env(),
            data=json.dumps(request),
        )
        what = "the migration tool (Alembic's env.py)" if request.get("env") else "the database"
        if rc != 0:
            why = self.client.tail(err or out)
            raise _Fail("reading %s failed: %s" % (what, why), detail=why)
        try:
            answer = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            why = self.client.tail(err or out)
            raise _Fail("reading %s gave no answer: %s" % (what, why), detail=why) from None
        for holder in (answer, answer.get("env") or {}):
            if isinstance(holder.get("identity"), dict) and "row" in holder["identity"]:
                ident = holder["identity"]
                holder["identity"] = _db.identity_from_row(ident["dialect"], ident["row"])
        return answer

    def current(self):
        """The revision, read on the connection the application's env.py opens (as ``alembic current``).

        The same helper process also reads the schema, the identity its own engine reaches, and the
        steps down to the target: one interpreter start instead of three. ``inspect`` and ``steps``
        use that read once, when nothing ran in between (``_read`` is emptied by any change).
        """
        request = {"env": True, "schema": True, "identity": True}
        if self.p.get("target_revision") is not None:
            request["down_to"] = self.p["target_revision"]
        answer = self.helper(**request)
        env = answer.get("env") or {}
        self._read = answer
        if env.get("error"):
            raise _Fail("Alembic's env.py cannot be checked: %s" % env["error"])
        self.seen = env.get("identity")
        heads = env.get("heads") or []
        if len(heads) > 1:
            raise _Fail("the database has several heads (%s): merge or pick one" % ", ".join(heads))
        return heads[0] if heads else _BASE

    def migration_identity(self):
        return self.seen

    def inspect(self, schema=False, queries=None):
        """Schema and query results through the application's SQLAlchemy, with the identity it reached."""
        read = self._read.pop("schema", None)
        if read is not None and schema and not queries:
            return {"identity": self._read.get("identity"), "schema": read}
        return self.helper(schema=schema, queries=queries or [], identity=True)

    def steps(self, current, target, live_schema=None):
        """The down steps from ``current`` to ``target``, newest first, classified."""
        if current == target:
            return []
        if self._read.get("down") == [current, target] and "revisions" in self._read:
            answer = {"revisions": self._read.pop("revisions")}
        else:
            answer = self.helper(revisions=[current, target])
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
        self._read = {}
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

    def __init__(self, module, conn, client):
        self.module = module
        self.p = module.params
        self.conn = conn
        self.client = client
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

    # -- talking to the database: through the same client the backup uses
    def rows(self, sql):
        return self.client.rows(sql)

    def script(self, body):
        return self.client.script(body)

    def migration_identity(self):
        return None  # the module's own client: the identity the backup's connection has

    def inspect(self, schema=False, queries=None):
        out = {}
        if schema:
            out["schema"] = self.client.schema()
        if queries:
            out["results"] = self.client.queries(queries)
        return out

    # -- the tool interface
    def _has_table(self):
        d = self.conn["dialect"]
        if d == "sqlite":
            sql = "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
        elif d == "postgresql":
            sql = (
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() "
                "AND table_name = 'schema_migrations'"
            )
        else:
            sql = (
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() "
                "AND table_name = 'schema_migrations'"
            )
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


class Sqitch(SqlScripts):
    """A sqitch project (C(sqitch.plan), C(revert/*.sql)), reverted one change at a time with sqitch itself."""

    _ENGINES = {"postgresql": "pg", "mysql": "mysql", "sqlite": "sqlite"}

    def __init__(self, module, conn, client):
        self.module = module
        self.p = module.params
        self.conn = conn
        self.client = client
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
            return _BASE
        if rc != 0:
            raise _Fail("sqitch status failed: %s" % self.client.tail(err or out))
        for line in out.splitlines():
            if line.startswith("# Name:"):
                return line.split(":", 1)[1].strip()
        raise _Fail("sqitch status did not name the deployed change: %s" % self.client.tail(out))

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


def _stamp():
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def _now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _backup_dir(module):
    directory = module.params["backup_dir"]
    if not directory:
        raise _Fail("no backup location is configured: set database.backup_dir in the manifest; nothing was changed")
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise _Fail("the backup directory %s cannot be created (%s); nothing was changed" % (directory, exc)) from None
    return directory


def backup(module, client, conn, revision, tables, attempt, note):
    """Take a backup of the database at ``revision`` and verify it; a backup that fails the check is refused."""
    directory = _backup_dir(module)
    name = _db.backup_name(module.params["app"], conn, revision, _stamp())
    stem, ext = name.rsplit(".", 1)
    path = os.path.join(directory, "%s-attempt%d.%s" % (stem, attempt, ext))
    n = 1
    while os.path.lexists(path):  # a name taken by anything, a dangling link included, is never written through
        n += 1
        path = os.path.join(directory, "%s-attempt%d-%d.%s" % (stem, attempt, n, ext))
    old_umask = os.umask(0o077)
    try:
        tool, restore = client.dump(path)
    finally:
        os.umask(old_umask)
    ok, how = client.verify(path, tables)
    if not ok:
        raise _Fail(
            "the backup %s could not be verified (%s); nothing was changed in the database" % (path, how),
            detail=how,
        )
    return {
        "path": path,
        "sha256": _db.sha256_file(path),
        "size": os.path.getsize(path),
        "tool": tool,
        "revision": revision,
        "taken": _now(),
        "attempt": attempt,
        "verified": True,
        "verified_by": how,
        "restore_command": restore,
        "note": note,
    }


def integrity(tool, current, target, critical_tables, assertions, reference):
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
        answer = tool.inspect(schema=bool(critical_tables), queries=[a.get("sql") for a in assertions])
        _same(reference, answer.get("identity"), "the integrity checks")
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


def _same(reference, other, who):
    """Refuse when ``who`` reaches another database than the backup's connection (``reference``)."""
    if other is None or _db.same_database(reference, other) is not False:
        return
    raise _Fail(
        "%s would reach %s, but the backup is taken of %s: they are not the same database (check the "
        "application's database settings, e.g. the variable its env.py reads, database.url_env); nothing was "
        "changed" % (who, _db.describe_identity(other), _db.describe_identity(reference)),
        refused=True,
        record={"identity_mismatch": {"backup": reference, "other": other, "who": who}},
    )


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", default="status", choices=["status", "downgraded"]),
            tool=dict(type="str", default="alembic", choices=["alembic", "sql", "sqitch"]),
            config=dict(type="path"),
            migrations=dict(type="path"),
            registry=dict(type="str"),
            url=dict(type="str", required=True, no_log=True),
            url_env=dict(type="str"),
            python=dict(type="path"),
            target_revision=dict(type="str"),
            expected_revision=dict(type="str"),
            expected_identity=dict(type="dict"),
            run_id=dict(type="str"),
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
    if p["url_env"] and not _ENV_NAME.match(p["url_env"]):
        module.fail_json(msg="url_env %r is not an environment variable name" % p["url_env"], database=record)
    if p["tool"] == "alembic" and not os.path.isfile(p["config"]):
        module.fail_json(msg="the Alembic configuration %s does not exist" % p["config"], database=record)
    state = {"before": None, "current": None, "run": None}
    try:
        cwd = os.path.dirname(p["config"]) if p["tool"] == "alembic" else p["migrations"]
        client = Client(module, conn, cwd)
        tool = {"alembic": Alembic, "sql": SqlScripts, "sqitch": Sqitch}[p["tool"]](module, conn, client)
        _run(module, tool, client, conn, record, state)
    except _Fail as exc:
        record.update(exc.extra.pop("record", {}))
        if exc.extra.get("detail"):
            record["error"] = exc.extra.pop("detail")
        exc.extra.pop("detail", None)
        record["current"] = state["current"]
        record["from_revision"] = state["before"]
        run = state["run"]
        if run:
            _publish_run(record, run)
            if run.get("applied") or run.get("half_applied"):
                # The run already changed this database: a refusal now is a failure to finish, not
                # a stage that changed nothing.
                exc.extra["refused"] = False
        module.fail_json(msg=exc.msg, before=state["before"], current=state["current"], database=record, **exc.extra)


def _on_planned_path(tool, planned_from, current, target):
    """Whether ``current`` lies between the plan's revision and the target (a run stopped part-way):
    resuming then goes on from there. A database found anywhere else has moved since the plan."""
    try:
        return current in [step["revision"] for step in tool.steps(planned_from, target, {})]
    except Exception:  # the plan's revision is not in this history: not our path
        return False


def _publish_run(record, run):
    """The run's backups in the stage's record: the restore point first, every backup, a half-applied step."""
    if run.get("restore_point"):
        record["restore_point"] = _db.public_backup(run["restore_point"])
        record["backup"] = record["restore_point"]  # the backup the report names
    record["backups"] = [_db.public_backup(b) for b in run.get("backups") or []]
    if run.get("half_applied"):
        record["half_applied"] = _db.public_backup(dict(run["half_applied"], schema=None))
        record["half_applied"].pop("schema_before", None)
    record["applied"] = list(run.get("applied") or [])
    record["attempt"] = run.get("attempts")
    record["run_record"] = run.get("path")


def _save(run):
    if run.get("path"):
        _db.save_run_record(run["path"], {k: v for k, v in run.items() if k != "path"})


def _load_run(module, reference):
    """The run's record from an earlier attempt (or a new one), after checking it is of this database."""
    p = module.params
    path = _db.run_record_path(p["backup_dir"], p["run_id"]) if p["backup_dir"] else None
    try:
        run = _db.load_run_record(path)
    except ValueError as exc:
        raise _Fail("%s; nothing was changed" % exc) from None
    if run is None:
        return {"run_id": p["run_id"], "path": path, "attempts": 0, "backups": [], "applied": []}
    run["path"] = path
    if _db.same_database(run.get("identity"), reference) is False:
        raise _Fail(
            "this run's restore point %s was taken of %s, but this attempt would change %s: make a new plan; "
            "nothing was changed"
            % (
                (run.get("restore_point") or {}).get("path"),
                _db.describe_identity(run.get("identity")),
                _db.describe_identity(reference),
            ),
            refused=True,
        )
    return run


def _earlier_half_applied(run, before, live):
    """A step an earlier attempt left half-applied (recorded, or the step it was in when it died)."""
    half = run.get("half_applied")
    running = run.pop("running", None)
    if not half and running and running.get("revision") == before:
        changes = _db.schema_diff(running.get("schema"), live)
        if changes:
            half = {
                "revision": running["revision"],
                "step": running.get("step"),
                "changes": changes,
                "attempt": running.get("attempt"),
                "schema_before": running.get("schema"),
                "note": "attempt %s stopped during this step" % running.get("attempt"),
            }
            run["half_applied"] = half
    return half


def _run(module, tool, client, conn, record, state):
    p = module.params
    target = p["target_revision"]
    client.require_file()
    before = tool.current()
    state["before"] = state["current"] = before
    record["from_revision"] = before
    # Data first: the backup, the migration and the checks must reach the very same database.
    reference = client.identity()
    record["identity"] = reference
    _same(reference, tool.migration_identity(), "the migration tool (%s)" % p["tool"])
    if p["expected_identity"] and _db.same_database(p["expected_identity"], reference) is False:
        raise _Fail(
            "the database is %s, but the plan was made for %s: build a new plan; nothing was changed"
            % (_db.describe_identity(reference), _db.describe_identity(p["expected_identity"])),
            refused=True,
        )
    tool.require_clean()
    if target is None:
        record["current"] = before
        module.exit_json(changed=False, before=before, current=before, database=record)
    answer = tool.inspect(schema=True)
    _same(reference, answer.get("identity"), "the integrity checks")
    live = answer.get("schema") or {}
    record["identity_checked"] = ["backup", "migration", "integrity checks"]
    steps = tool.steps(before, target, live)
    record["steps"] = steps
    if p["state"] == "status":
        record["current"] = before
        module.exit_json(changed=False, before=before, current=before, steps=steps, database=record)

    run = None
    if p["run_id"] and p["backup_dir"] and not module.check_mode:
        run = state["run"] = _load_run(module, reference)
    if (
        p["expected_revision"]
        and before not in (p["expected_revision"], target)
        and not _on_planned_path(tool, p["expected_revision"], before, target)
    ):
        raise _Fail(
            "the database is at revision %s, but the plan was made at revision %s: build a new plan; "
            "nothing was changed" % (before, p["expected_revision"]),
            refused=True,
            stale=True,
        )
    earlier = _earlier_half_applied(run, before, live) if run else None
    if earlier and earlier.get("revision") == before and not earlier.get("resolved"):
        still = _db.schema_diff(earlier.get("schema_before"), live)
        if still:
            restore = run.get("restore_point") or {}
            raise _Fail(
                "down step %s was left half-applied by attempt %s (%s) and the schema is still that way: "
                "finish or undo those changes by hand, then resume; or restore the run's restore point %s "
                "(revision %s): %s. This attempt changed nothing"
                % (
                    earlier.get("step") or earlier.get("revision"),
                    earlier.get("attempt"),
                    "; ".join(earlier.get("changes") or []),
                    restore.get("path"),
                    restore.get("revision"),
                    restore.get("restore_command"),
                ),
                refused=True,
            )
        earlier["resolved"] = "the schema was put back as it was before the step (seen by attempt %d)" % (
            run["attempts"] + 1
        )
    elif earlier and not earlier.get("resolved"):
        earlier["resolved"] = "the database has moved on to revision %s since" % before
    problem = _db.guard_problem(steps, p["approved_steps"])
    if problem:
        raise _Fail("refused before touching the database: %s" % problem, refused=True)
    if not steps:
        record["integrity"] = integrity(tool, before, target, p["critical_tables"], p["assertions"], reference)
        record["current"] = before
        if run and run.get("restore_point"):
            _publish_run(record, run)
        _finish(module, record, changed=False, before=before, current=before)
    if module.check_mode:
        record["current"] = before
        module.exit_json(changed=True, before=before, current=before, steps=steps, database=record)

    if run is None:  # no run id: this call's own backup is its restore point
        run = state["run"] = {"path": None, "attempts": 0, "backups": [], "applied": []}
    run["attempts"] += 1
    attempt = run["attempts"]
    run["identity"] = reference
    if not run.get("restore_point"):
        note = "the run's restore point: the database at revision %s before the rollback changed anything" % before
        taken = backup(module, client, conn, before, list(live), attempt, note)
        run["restore_point"] = taken
    else:
        note = "taken by attempt %d before it went on from revision %s; the restore point is still %s" % (
            attempt,
            before,
            run["restore_point"]["path"],
        )
        taken = backup(module, client, conn, before, list(live), attempt, note)
    run["backups"].append(taken)
    _save(run)  # before the first change: a killed attempt leaves the restore point findable
    _publish_run(record, run)
    restore_point = run["restore_point"]
    for step in steps:
        # A snapshot before each step tells a failed step that left part of its DDL behind (MariaDB and
        # Alembic's SQLite run DDL outside a transaction) from one that was rolled back whole.
        snapshot = tool.inspect(schema=True).get("schema")
        run["running"] = {
            "step": _db.step_label(step),
            "revision": step["revision"],
            "schema": snapshot,
            "attempt": attempt,
        }
        _save(run)
        rc, out, err = tool.downgrade(step["to"], step)
        reached = tool.current()
        state["current"] = reached
        _same(reference, tool.migration_identity(), "the migration tool (%s)" % p["tool"])
        if rc != 0 or reached != step["to"] or getattr(tool, "dirty", None):
            why = client.tail(err or out) if rc != 0 else "the tool left the database at %s" % reached
            extra = {"failed_step": _db.step_label(step), "error": why}
            msg = "down step %s failed: %s. The database is at revision %s" % (_db.step_label(step), why, reached)
            if getattr(tool, "dirty", None):
                extra["dirty"] = tool.dirty
                msg = (
                    "down step %s failed: %s. schema_migrations says version %s, dirty: the down script of %s "
                    "stopped part-way, so the schema is between %s and %s"
                    % (_db.step_label(step), why, reached, step["revision"], step["revision"], reached)
                )
            run.pop("running", None)
            if snapshot is not None and (reached == step["revision"] or "dirty" in extra):
                changes = _db.schema_diff(snapshot, tool.inspect(schema=True).get("schema"))
                if changes:
                    run["half_applied"] = {
                        "revision": step["revision"],
                        "step": _db.step_label(step),
                        "changes": changes,
                        "attempt": attempt,
                        "schema_before": snapshot,
                    }
                    msg += (
                        " with part of step %s applied (its DDL is not transactional): %s. Finish or undo those "
                        "changes by hand, or restore the restore point" % (_db.step_label(step), "; ".join(changes))
                    )
            _save(run)
            _publish_run(record, run)
            msg += "; no further down step ran; the restore point is %s (revision %s; restore: %s)" % (
                restore_point["path"],
                restore_point["revision"],
                restore_point["restore_command"],
            )
            raise _Fail(msg, changed=bool(run.get("applied")) or "half_applied" in run, record=extra, detail=why)
        run.pop("running", None)
        run["applied"].append(_db.step_label(step))
        _save(run)
    _publish_run(record, run)
    record["current"] = state["current"]
    record["integrity"] = integrity(tool, state["current"], target, p["critical_tables"], p["assertions"], reference)
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
