# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The database's own client (``psql``, ``mariadb`` or Python's sqlite3): what the backup, the
identity check and the ``sql`` tool use, so they all reach the same database."""

from __future__ import annotations

import os
import sqlite3

from ansible_collections.release.rollback.plugins.module_utils import dbmigrate as _db
from ansible_collections.release.rollback.plugins.module_utils.dbtools import base

try:
    from urllib.parse import quote
except ImportError:  # pragma: no cover
    from urllib import quote  # type: ignore

SCHEMA_SQL = {
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
            raise base.Fail(
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
            raise base.Fail("query failed: %s" % self.tail(err or out), detail=self.tail(err or out))
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
            raise base.Fail("the database did not say which database it is")
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
        cols, idx = SCHEMA_SQL[self.conn["dialect"]]
        for row in self.rows(cols):
            tables.setdefault(row[0], {})[row[1]] = row[2]
        for row in self.rows(idx):
            tables.setdefault(row[0], {})["@index " + row[1]] = row[2]
        return tables

    def has_table(self, name):
        """Whether the database has table ``name`` (in the current schema); ``name`` is a plain word."""
        d = self.conn["dialect"]
        if d == "sqlite":
            sql = "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '%s'" % name
        elif d == "postgresql":
            sql = (
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() "
                "AND table_name = '%s'" % name
            )
        else:
            sql = (
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() "
                "AND table_name = '%s'" % name
            )
        return str(self.rows(sql)[0][0]) != "0"

    def queries(self, queries):
        results = []
        for sql in queries or []:
            try:
                rows = self.rows(sql)
                results.append({"value": rows[0][0] if rows else None})
            except (base.Fail, sqlite3.Error) as exc:
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
            raise base.Fail(
                "%s is not installed on the database host: install the database client tools; nothing was changed"
                % " or ".join(names)
            )
        argv, env, restore = _db.backup_commands(conn, path, dump)
        rc, out, err = self.module.run_command(argv, environ_update=env)
        if rc != 0:
            why = self.tail(err or out)
            raise base.Fail(
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
