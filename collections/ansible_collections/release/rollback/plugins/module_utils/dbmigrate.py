# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The database stage's domain logic: URLs, the reversibility classifier, backups, integrity checks.

Pure Python, standard library only: the ``db_migrate`` module uses it on the database host and the
plan uses the same step records on the controller.

A *down step* is one migration undone: ``{"id": "b2", "revision": "b2", "to": "a1", "destructive":
bool, "irreversible": bool, "runnable": bool, "reasons": [...]}``. ``destructive`` means the step
loses data (drops a table or column, truncates, deletes rows, narrows a type); ``irreversible``
means it cannot restore the previous schema (no down script, an empty downgrade, or a downgrade
that raises NotImplementedError); ``runnable`` is False when it cannot run at all.
"""

from __future__ import annotations

import ast
import hashlib
import re
import shlex

try:  # Python 3
    from urllib.parse import parse_qs, unquote, urlsplit
except ImportError:  # pragma: no cover
    from urlparse import parse_qs, unquote, urlsplit  # type: ignore

# ------------------------------------------------------------------------------------------- URLs


def parse_url(url):
    """Split an SQLAlchemy URL into its parts: dialect (postgresql, mysql or sqlite), user,
    password, host, port, database (or the file path for SQLite). Raises ValueError."""
    if not isinstance(url, str) or "://" not in url:
        raise ValueError("the database URL must look like dialect://user@host/dbname or sqlite:///path")
    scheme = url.split("://", 1)[0].lower()
    dialect = scheme.split("+", 1)[0]
    if dialect in ("postgres", "postgresql"):
        dialect = "postgresql"
    elif dialect in ("mysql", "mariadb"):
        dialect = "mysql"
    elif dialect != "sqlite":
        raise ValueError("the database dialect %r is not supported: use postgresql, mysql/mariadb or sqlite" % dialect)
    if dialect == "sqlite":
        path = url.split("://", 1)[1]
        path = path[1:] if path.startswith("/") else path
        path = path.split("?", 1)[0]
        if not path or path == ":memory:":
            raise ValueError("an SQLite URL must name a database file, e.g. sqlite:////srv/app/app.db")
        return {"dialect": "sqlite", "path": path, "database": path}
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    host = parts.hostname or (query.get("host") or [None])[0]
    database = unquote(parts.path.lstrip("/"))
    if not database:
        raise ValueError("the database URL names no database: add /dbname to it")
    return {
        "dialect": dialect,
        "user": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
        "host": host,
        "port": parts.port,
        "database": database,
    }


# ------------------------------------------------------------------------------------- classifier

_SQL_COMMENT = re.compile(r"--[^\n]*|/\*.*?\*/", re.S)
_IDENT = r"[`\"\[]?([\w.$]+)[`\"\]]?"
_SQL_RULES = (
    (re.compile(r"\bDROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?" + _IDENT, re.I), "drops table %s"),
    (re.compile(r"\bDROP\s+(?:SCHEMA|DATABASE)\s+(?:IF\s+EXISTS\s+)?" + _IDENT, re.I), "drops schema %s"),
    (re.compile(r"\bDROP\s+COLUMN\s+(?:IF\s+EXISTS\s+)?" + _IDENT, re.I), "drops column %s"),
    (re.compile(r"\bTRUNCATE\s+(?:TABLE\s+)?" + _IDENT, re.I), "truncates table %s"),
    (re.compile(r"\bDELETE\s+FROM\s+" + _IDENT, re.I), "deletes rows from %s"),
    (
        re.compile(r"\bALTER\s+COLUMN\s+" + _IDENT + r"\s+(?:SET\s+DATA\s+)?TYPE\b", re.I),
        "changes the type of column %s (may narrow it)",
    ),
    (re.compile(r"\bMODIFY\s+(?:COLUMN\s+)?" + _IDENT, re.I), "changes the type of column %s (may narrow it)"),
    (re.compile(r"\bCHANGE\s+(?:COLUMN\s+)?" + _IDENT, re.I), "changes column %s (may narrow it)"),
)
# MySQL's ``ALTER TABLE t DROP c`` drops a column without the word COLUMN.
_MYSQL_BARE_DROP = re.compile(
    r"\bALTER\s+TABLE\s+" + _IDENT + r"\s+DROP\s+(?!COLUMN\b|INDEX\b|KEY\b|CONSTRAINT\b|PRIMARY\b|FOREIGN\b"
    r"|CHECK\b|PARTITION\b|IF\b)" + _IDENT,
    re.I,
)


def classify_sql(sql):
    """Reasons why the SQL text loses data (empty list when it does not)."""
    text = _SQL_COMMENT.sub(" ", sql or "")
    reasons = []
    for pattern, what in _SQL_RULES:
        for m in pattern.finditer(text):
            reasons.append(what % m.group(1))
    for m in _MYSQL_BARE_DROP.finditer(text):
        reasons.append("drops column %s.%s" % (m.group(1), m.group(2)))
    return _unique(reasons)


def sql_is_empty(sql):
    text = _SQL_COMMENT.sub(" ", sql or "")
    return not text.replace(";", " ").strip()


def _unique(items):
    out = []
    for item in items:
        if item not in out:
            out.append(item)
    return out


def _const(node):
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, int)):
        return node.value
    return None


def _call_name(node):
    func = node.func
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return None


def _type_length(node):
    """``sa.String(40)`` -> ("String", 40); anything else -> (name or None, None)."""
    if isinstance(node, ast.Call):
        name = _call_name(node)
        length = _const(node.args[0]) if node.args else None
        for kw in node.keywords:
            if kw.arg == "length":
                length = _const(kw.value)
        return name, length if isinstance(length, int) else None
    if isinstance(node, ast.Attribute):
        return node.attr, None
    if isinstance(node, ast.Name):
        return node.id, None
    return None, None


class _DowngradeVisitor(ast.NodeVisitor):
    def __init__(self, live_columns):
        self.reasons = []
        self.raises = False
        self.live_columns = live_columns or {}
        self.batch_tables = []

    def visit_Raise(self, node):
        exc = node.exc
        name = None
        if isinstance(exc, ast.Call):
            name = _call_name(exc)
        elif isinstance(exc, ast.Name):
            name = exc.id
        if name == "NotImplementedError":
            self.raises = True
        self.generic_visit(node)

    def visit_With(self, node):
        pushed = 0
        for item in node.items:
            call = item.context_expr
            if isinstance(call, ast.Call) and _call_name(call) == "batch_alter_table" and call.args:
                self.batch_tables.append(_const(call.args[0]))
                pushed += 1
        self.generic_visit(node)
        del self.batch_tables[len(self.batch_tables) - pushed :]

    def _table(self, node, index=0):
        if len(node.args) > index:
            return _const(node.args[index])
        for kw in node.keywords:
            if kw.arg in ("table_name", "name"):
                return _const(kw.value)
        return None

    def visit_Call(self, node):
        name = _call_name(node)
        batch = self.batch_tables[-1] if self.batch_tables else None
        if name == "drop_table":
            self.reasons.append("drops table %s" % self._table(node))
        elif name == "drop_column":
            if batch is not None and len(node.args) == 1:
                table, column = batch, _const(node.args[0])
            else:
                table, column = self._table(node), _const(node.args[1]) if len(node.args) > 1 else None
            self.reasons.append("drops column %s.%s" % (table, column))
        elif name == "execute" and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Call) and _call_name(arg) == "text" and arg.args:
                arg = arg.args[0]
            sql = _const(arg)
            if isinstance(sql, str):
                self.reasons.extend(classify_sql(sql))
            else:
                self.reasons.append("runs SQL that cannot be read before it runs (may lose data)")
        elif name == "bulk_delete":
            self.reasons.append("deletes rows")
        elif name == "alter_column":
            self._alter_column(node, batch)
        self.generic_visit(node)

    def _alter_column(self, node, batch):
        kw = {k.arg: k.value for k in node.keywords}
        if "type_" not in kw:
            return
        if batch is not None and len(node.args) == 1:
            table, column = batch, _const(node.args[0])
        else:
            table, column = self._table(node), _const(node.args[1]) if len(node.args) > 1 else None
        new_name, new_len = _type_length(kw["type_"])
        old_len = None
        if "existing_type" in kw:
            _old_name, old_len = _type_length(kw["existing_type"])
        if old_len is None:
            old_len = _live_length((self.live_columns.get(table) or {}).get(column))
        where = "%s.%s" % (table, column)
        if new_len is not None and old_len is not None:
            if new_len < old_len:
                self.reasons.append("narrows column %s from length %d to %d" % (where, old_len, new_len))
            return
        self.reasons.append("changes the type of column %s to %s (may narrow it)" % (where, new_name))


def _live_length(type_text):
    m = re.search(r"\((\d+)\)", type_text or "")
    return int(m.group(1)) if m else None


def classify_alembic_source(source, live_columns=None):
    """Classify the ``downgrade()`` of an Alembic revision file's source.

    Returns ``{"destructive", "irreversible", "runnable", "reasons"}``. ``live_columns`` (table ->
    column -> type text) lets a type change be judged against the live schema.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        return _verdict(False, True, False, ["the revision file does not parse (line %s)" % exc.lineno])
    func = None
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "downgrade":
            func = node
    if func is None:
        return _verdict(False, True, False, ["the revision has no downgrade() function"])
    body = [
        n
        for n in func.body
        if not (isinstance(n, ast.Pass) or (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)))
    ]
    if not body:
        return _verdict(False, True, True, ["downgrade() is empty: the schema would not be reverted"])
    visitor = _DowngradeVisitor(live_columns)
    for node in body:
        visitor.visit(node)
    if visitor.raises:
        return _verdict(
            bool(visitor.reasons), True, False, ["downgrade() raises NotImplementedError"] + _unique(visitor.reasons)
        )
    reasons = _unique(visitor.reasons)
    return _verdict(bool(reasons), False, True, reasons)


def classify_sql_script(text):
    """Classify a ``.down.sql`` script's text (None when the script is missing)."""
    if text is None:
        return _verdict(False, True, False, ["there is no down script"])
    if sql_is_empty(text):
        return _verdict(False, True, True, ["the down script is empty: the schema would not be reverted"])
    reasons = classify_sql(text)
    return _verdict(bool(reasons), False, True, reasons)


def _verdict(destructive, irreversible, runnable, reasons):
    return {"destructive": destructive, "irreversible": irreversible, "runnable": runnable, "reasons": reasons}


def needs_approval(step):
    return bool(step.get("destructive") or step.get("irreversible"))


def step_label(step):
    return "%s -> %s" % (step.get("revision"), step.get("to") or "base")


def guard_problem(steps, approved_ids):
    """None when every step may run; else one sentence saying which steps are refused and why.

    A step that cannot run at all (no down script, NotImplementedError) is always refused; a
    destructive or irreversible one runs only when its id is in ``approved_ids``.
    """
    approved = set(approved_ids or ())
    unrunnable = [s for s in steps or () if not s.get("runnable", True)]
    if unrunnable:
        s = unrunnable[0]
        return (
            "down step %s is irreversible (%s): it cannot run; restore the database from a backup taken "
            "before the release, or roll the schema forward with a new migration"
            % (step_label(s), "; ".join(s.get("reasons") or ["irreversible"]))
        )
    missing = [s for s in steps or () if needs_approval(s) and s.get("id") not in approved]
    if missing:
        return (
            "down step(s) %s would lose data or cannot restore the schema (%s): they run only with an "
            "approval made with `release-rollback approve PLAN --approver NAME --destructive`"
            % (
                ", ".join(step_label(s) for s in missing),
                "; ".join("%s: %s" % (s.get("revision"), ", ".join(s.get("reasons") or [])) for s in missing),
            )
        )
    return None


# ---------------------------------------------------------------------------------------- backups


def backup_commands(conn, path, dump_bin):
    """``(argv, env, restore_command)`` of a logical backup of ``conn`` into ``path``.

    The password goes in the environment (PGPASSWORD / MYSQL_PWD), never on a command line, and
    the restore command names it as a variable.
    """
    q = shlex.quote
    if conn["dialect"] == "postgresql":
        common = []
        if conn.get("host"):
            common += ["--host", conn["host"]]
        if conn.get("port"):
            common += ["--port", str(conn["port"])]
        if conn.get("user"):
            common += ["--username", conn["user"]]
        argv = [dump_bin, "--format=custom", "--no-owner", "--no-privileges", "--file", path] + common
        argv += [conn["database"]]
        restore = "pg_restore --no-owner --no-privileges --clean --if-exists %s--dbname %s %s" % (
            "".join("%s " % q(x) for x in common),
            q(conn["database"]),
            q(path),
        )
        env = {"PGPASSWORD": conn["password"]} if conn.get("password") else {}
        return argv, env, restore + ("  # password from PGPASSWORD or ~/.pgpass" if conn.get("password") else "")
    if conn["dialect"] == "mysql":
        common = []
        if conn.get("host"):
            common += ["--host", conn["host"]]
        if conn.get("port"):
            common += ["--port", str(conn["port"])]
        if conn.get("user"):
            common += ["--user", conn["user"]]
        argv = [dump_bin, "--single-transaction", "--routines", "--triggers", "--result-file", path] + common
        argv += [conn["database"]]
        restore = "mariadb %s%s < %s" % ("".join("%s " % q(x) for x in common), q(conn["database"]), q(path))
        env = {"MYSQL_PWD": conn["password"]} if conn.get("password") else {}
        return argv, env, restore + ("  # password from MYSQL_PWD or ~/.my.cnf" if conn.get("password") else "")
    raise ValueError("no dump tool for %s" % conn["dialect"])


def sqlite_restore_command(backup, db_path):
    return "cp %s %s  # with the application stopped" % (shlex.quote(backup), shlex.quote(db_path))


def backup_name(app, conn, revision, stamp):
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", "%s-%s" % (app or "app", conn["database"].rsplit("/", 1)[-1]))
    ext = {"postgresql": "pgdump", "mysql": "sql", "sqlite": "sqlite3"}[conn["dialect"]]
    return "%s-%s-%s.%s" % (safe, revision or "base", stamp, ext)


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1024 * 1024), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


# ---------------------------------------------------------------------------------------- schema


def schema_diff(before, after):
    """What changed between two schema snapshots (table -> column -> type text), as sentences."""
    before, after = before or {}, after or {}
    out = []
    for table in sorted(set(before) - set(after)):
        out.append("table %s dropped" % table)
    for table in sorted(set(after) - set(before)):
        out.append("table %s created" % table)
    for table in sorted(set(before) & set(after)):
        b, a = before[table] or {}, after[table] or {}
        for col in sorted(set(b) - set(a)):
            out.append("%s dropped" % _thing(table, col))
        for col in sorted(set(a) - set(b)):
            out.append("%s added" % _thing(table, col))
        for col in sorted(set(a) & set(b)):
            if a[col] != b[col]:
                out.append("%s changed from %s to %s" % (_thing(table, col), b[col], a[col]))
    return out


def _thing(table, key):
    if key.startswith("@index "):
        return "index %s on %s" % (key[len("@index ") :], table)
    return "column %s.%s" % (table, key)


def check_assertion(assertion, value):
    """Whether a user's SQL assertion holds: ``value`` (first column of the first row) == expect."""
    expect = assertion.get("expect", True)
    if isinstance(expect, bool):
        ok = value not in (None, 0, "0", "", False, "f", "false") if expect else value in (None, 0, "0", False, "f")
    else:
        ok = str(value) == str(expect)
    return ok


# The helper the module runs in the application's Python (where SQLAlchemy, the database driver
# and Alembic are installed), reading a JSON request on stdin and the URL from DATABASE_URL.
HELPER = r'''
import json, os, sys
req = json.load(sys.stdin)
out = {}
def _schema(conn):
    from sqlalchemy import inspect
    insp = inspect(conn)
    tables = {}
    for t in insp.get_table_names():
        tables[t] = {c["name"]: str(c["type"]) for c in insp.get_columns(t)}
        for ix in insp.get_indexes(t):
            tables[t]["@index " + str(ix["name"])] = ",".join(str(c) for c in ix.get("column_names") or [])
    return tables
if req.get("revisions") is not None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    upper, lower = req["revisions"]
    script = ScriptDirectory.from_config(Config(req["config"]))
    try:
        revs = list(script.iterate_revisions(upper, lower))
    except Exception as exc:
        print(json.dumps({"error": "%s: %s" % (exc.__class__.__name__, exc)}))
        sys.exit(0)
    out["revisions"] = []
    for r in revs:
        down = r.down_revision
        if isinstance(down, (tuple, list)):
            out["revisions"].append({"revision": r.revision, "down": list(down), "path": r.path, "merge": True})
        else:
            out["revisions"].append({"revision": r.revision, "down": down, "path": r.path})
if req.get("schema") or req.get("queries"):
    from sqlalchemy import create_engine, text
    engine = create_engine(os.environ["DATABASE_URL"])
    try:
        with engine.connect() as conn:
            if req.get("schema"):
                out["schema"] = _schema(conn)
            if req.get("queries"):
                out["results"] = []
                for sql in req["queries"]:
                    try:
                        row = conn.execute(text(sql)).first()
                        val = row[0] if row is not None else None
                        if not isinstance(val, (int, float, str, type(None))):
                            val = str(val)
                        out["results"].append({"value": val})
                    except Exception as exc:
                        conn.rollback()
                        out["results"].append({"error": str(exc).splitlines()[0][:300]})
    finally:
        engine.dispose()
print(json.dumps(out))
'''
