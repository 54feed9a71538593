# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The database stage's domain logic: URLs, the reversibility classifier, backups, integrity checks.

Pure Python, standard library only: the ``db_migrate`` module uses it on the database host and the
plan uses the same step records on the controller.

A *down step* is one migration undone: ``{"id": "b2", "revision": "b2", "to": "a1", "destructive":
bool, "irreversible": bool, "runnable": bool, "unclassified": bool, "reasons": [...]}``.
``destructive`` means the step loses data (drops a table or column, truncates, deletes or
overwrites rows, sets a column to NULL, narrows a type); ``irreversible`` means it may not restore
the previous schema (no down script, an empty downgrade, a downgrade that raises);
``unclassified`` means the classifier could not read all of it (it is then destructive too: it
fails closed); ``runnable`` is False when it cannot run at all.
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
import shlex

from ansible_collections.release.rollback.plugins.module_utils import runrecord as _runrecord

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
#
# The classifier fails closed: what it cannot read (SQL built at run time, a call it cannot follow,
# procedural SQL) is *unclassified*, which the guard treats like a destructive step: it runs only
# with a destructive approval. Its reasons name the real table and column.

_SQL_COMMENT = re.compile(r"--[^\n]*|/\*.*?\*/", re.S)
_SQL_STRING = re.compile(r"'(?:[^']|'')*'")
_DOLLAR_QUOTED = re.compile(r"\$([A-Za-z_]\w*)?\$.*?\$\1\$", re.S)
# One identifier, quoted ("x", `x`, [x]) or not, possibly qualified (schema.table, "s"."t").
_ONE_IDENT = r'(?:"[^"]+"|`[^`]+`|\[[^\]]+\]|[\w$]+)'
_IDENT = r"(" + _ONE_IDENT + r"(?:\s*\.\s*" + _ONE_IDENT + r")*)"
_IDENT_LIST = r"(" + _IDENT + r"(?:\s*,\s*" + _IDENT + r")*)"
_NOT_A_COLUMN = ("INDEX", "KEY", "CONSTRAINT", "PRIMARY", "FOREIGN", "CHECK", "UNIQUE", "DEFAULT", "NOT")


def _name(text):
    """``"public"."orders"`` -> ``public.orders``; ``[dbo].[x]`` -> ``dbo.x``."""
    parts = re.findall(_ONE_IDENT, text or "")
    return ".".join(p.strip('"`[]') for p in parts)


def _names(text):
    return [_name(m.group(0)) for m in re.finditer(_IDENT, text or "")]


def _split_top(text, sep=","):
    """Split at ``sep`` outside parentheses."""
    out, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == sep and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return [x.strip() for x in out if x.strip()]


def _statements(sql):
    """The SQL text's statements, comments and string literals blanked (``''``)."""
    text = _SQL_COMMENT.sub(" ", sql or "")
    text = _DOLLAR_QUOTED.sub(" $$ ", text)
    text = _SQL_STRING.sub("''", text)
    return [s.strip() for s in text.split(";") if s.strip()]


def _alter_table_reasons(table, clauses):
    out = []
    for clause in _split_top(clauses):
        m = re.match(r"DROP\s+(?:COLUMN\s+)?(?:IF\s+EXISTS\s+)?" + _IDENT, clause, re.I)
        if m and _name(m.group(1)).upper() not in _NOT_A_COLUMN and not re.match(r"DROP\s+PARTITION\b", clause, re.I):
            out.append("drops column %s.%s" % (table, _name(m.group(1))))
            continue
        m = re.match(r"(?:DROP|TRUNCATE)\s+PARTITION\s+" + _IDENT_LIST, clause, re.I)
        if m:
            out.append("deletes the rows of partition(s) %s of %s" % (", ".join(_names(m.group(1))), table))
            continue
        # PostgreSQL's ALTER COLUMN ... TYPE and MySQL/MariaDB's MODIFY say the same thing.
        m = re.match(r"ALTER\s+(?:COLUMN\s+)?" + _IDENT + r"\s+(?:SET\s+DATA\s+)?TYPE\s+(.+)", clause, re.I | re.S)
        m = m or re.match(r"MODIFY\s+(?:COLUMN\s+)?" + _IDENT + r"\s+(.+)", clause, re.I | re.S)
        if m:
            out.append(
                "changes the type of column %s.%s to %s (may narrow it)"
                % (table, _name(m.group(1)), " ".join(m.group(2).split())[:60])
            )
            continue
        m = re.match(r"CHANGE\s+(?:COLUMN\s+)?" + _IDENT, clause, re.I)
        if m:
            out.append("changes column %s.%s (may narrow it)" % (table, _name(m.group(1))))
    return out


def _update_reasons(table, sets):
    out = []
    for assignment in _split_top(sets):
        m = re.match(_IDENT + r"\s*=\s*(.+)$", assignment, re.S)
        if not m:
            out.append("overwrites rows of %s" % table)
            continue
        column = _name(m.group(1)).rsplit(".", maxsplit=1)[-1]
        if re.match(r"NULL\s*$", m.group(2), re.I):
            out.append("sets column %s.%s to NULL" % (table, column))
        else:
            out.append("overwrites column %s.%s (its old values are lost)" % (table, column))
    return out


def _sql_findings(sql):
    """``(reasons it loses data, reasons it cannot be analysed)`` for SQL text."""
    raw = _SQL_COMMENT.sub(" ", sql or "")
    lost, unknown = [], []
    if re.search(r"(^|;)\s*DO\b", raw, re.I) or (re.search(r"\bLANGUAGE\s+\w+", raw, re.I) and "$" in raw):
        unknown.append("runs procedural SQL (a DO block or a function body) that cannot be analysed")
    for st in _statements(sql):
        s = " ".join(st.split())
        m = re.match(r"DROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?" + _IDENT_LIST, s, re.I)
        if m:
            lost += ["drops table %s" % t for t in _names(m.group(1)) if t.upper() not in ("CASCADE", "RESTRICT")]
            continue
        m = re.match(r"DROP\s+(?:SCHEMA|DATABASE)\s+(?:IF\s+EXISTS\s+)?" + _IDENT, s, re.I)
        if m:
            lost.append("drops schema %s" % _name(m.group(1)))
            continue
        m = re.match(r"DROP\s+SEQUENCE\s+(?:IF\s+EXISTS\s+)?" + _IDENT, s, re.I)
        if m:
            lost.append("drops sequence %s (its current value is lost)" % _name(m.group(1)))
            continue
        m = re.match(r"TRUNCATE\s+(?:TABLE\s+)?(?:ONLY\s+)?" + _IDENT_LIST, s, re.I)
        if m:
            lost += ["truncates table %s" % t for t in _names(m.group(1)) if t.upper() not in ("CASCADE", "RESTRICT")]
            continue
        m = re.match(r"DELETE\s+(?:\w+\s+)?FROM\s+(?:ONLY\s+)?" + _IDENT, s, re.I) or re.match(
            r"DELETE\s+" + _IDENT + r"\s+FROM\b", s, re.I
        )
        if m:
            lost.append("deletes rows from %s" % _name(m.group(1)))
            continue
        m = re.match(
            r"UPDATE\s+(?:ONLY\s+)?"
            + _IDENT
            + r"(?:\s+(?:AS\s+)?\w+)?\s+SET\s+(.+?)(?:\s+(?:WHERE|FROM|RETURNING)\b.*)?$",
            s,
            re.I | re.S,
        )
        if m:
            lost += _update_reasons(_name(m.group(1)), m.group(2))
            continue
        m = re.match(r"UPDATE\s+" + _IDENT, s, re.I)
        if m:
            lost.append("overwrites rows of %s" % _name(m.group(1)))
            continue
        m = re.match(r"ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?" + _IDENT + r"\s+(.+)$", s, re.I | re.S)
        if m:
            lost += _alter_table_reasons(_name(m.group(1)), m.group(2))
            continue
        m = re.match(r"REPLACE\s+(?:INTO\s+)?" + _IDENT, s, re.I)
        if m:
            lost.append("replaces rows of %s (REPLACE deletes the old row)" % _name(m.group(1)))
            continue
        m = re.match(r"INSERT\s+(?:\w+\s+)*?INTO\s+" + _IDENT, s, re.I)
        if m and re.search(r"\bON\s+(?:DUPLICATE\s+KEY|CONFLICT\b.*\bDO)\s+UPDATE\b", s, re.I):
            lost.append("overwrites rows of %s (an upsert)" % _name(m.group(1)))
            continue
        m = re.match(r"MERGE\s+INTO\s+" + _IDENT, s, re.I)
        if m:
            lost.append("merges into %s (may update or delete rows)" % _name(m.group(1)))
            continue
        m = re.match(r"(EXECUTE|PREPARE|CALL|EXEC)\b", s, re.I)
        if m:
            unknown.append("runs %s, whose SQL cannot be read before it runs" % m.group(1).upper())
    return _unique(lost), _unique(unknown)


def classify_sql(sql):
    """Reasons why the SQL text loses data or cannot be analysed (empty list when it does neither)."""
    lost, unknown = _sql_findings(sql)
    return lost + unknown


def sql_is_empty(sql):
    text = _SQL_COMMENT.sub(" ", sql or "")
    return not text.replace(";", " ").strip()


def _unique(items):
    out = []
    for item in items:
        if item not in out:
            out.append(item)
    return out


_UNKNOWN = object()  # a value the classifier cannot work out before the migration runs

# Alembic operations (and SQLAlchemy construct methods) that keep the data.
_SAFE_CALLS = frozenset(
    (  # noqa: SIM905
        "add_column create_table create_index create_foreign_key create_primary_key create_unique_constraint "
        "create_check_constraint create_exclude_constraint create_table_comment drop_table_comment drop_index "
        "drop_constraint rename_table batch_alter_table f get_bind get_context inline_literal bulk_insert "
        "create_sequence create Column String Text Integer BigInteger SmallInteger Numeric Float Boolean Date "
        "DateTime Time Interval LargeBinary Enum JSON ARRAY UUID Uuid Unicode UnicodeText ForeignKey "
        "ForeignKeyConstraint PrimaryKeyConstraint UniqueConstraint CheckConstraint Index Identity Computed "
        "table column text literal_column select insert values where filter filter_by and_ or_ not_ func "
        "label alias c in_ is_ isnot like order_by limit returning scalar_subquery subquery cast "
        "server_default DefaultClause MetaData Table Sequence ENUM JSONB VARCHAR INTEGER TEXT TIMESTAMP "
        "print len range str int float bool list dict set tuple sorted enumerate zip isinstance repr min max "
        "any all format join lower upper strip replace split getLogger info debug warning warn error exception "
        "critical is_offline_mode get_x_argument get_section_option get_main_option inspect get_table_names "
        "get_columns get_indexes has_table scalar scalars fetchall fetchone first one all mappings"
    ).split()
)


def _call_name(node):
    func = node.func
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return None


def _arg(node, index, *keywords):
    """A call's argument by position or keyword (the AST node, or None)."""
    for kw in node.keywords:
        if kw.arg in keywords:
            return kw.value
    if len(node.args) > index and not isinstance(node.args[index], ast.Starred):
        return node.args[index]
    return None


class _Analyser:
    """Walks ``downgrade()`` and every helper function of the file it calls, with the file's constants."""

    def __init__(self, tree, live_columns):
        self.live_columns = live_columns or {}
        self.functions = {}
        self.constants = {}
        self.lost = []
        self.unknown = []
        self.raises = []  # (exception name, unconditional, where)
        self.stack = []
        self.batch = []
        self.tables = {}  # variable -> table name, for sa.table("orders", ...) / sa.Table(...)
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.functions[node.name] = node
            elif isinstance(node, ast.Assign):
                self._assign(node, self.constants)
            elif isinstance(node, ast.AnnAssign) and node.value is not None and isinstance(node.target, ast.Name):
                self.constants[node.target.id] = self.value(node.value, {})

    # -- values known before the migration runs
    def value(self, node, env):
        if node is None:
            return _UNKNOWN
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in env:
                return env[node.id]
            return self.constants.get(node.id, _UNKNOWN)
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            items = [self.value(e, env) for e in node.elts]
            return _UNKNOWN if any(i is _UNKNOWN for i in items) else items
        if isinstance(node, ast.JoinedStr):
            parts = []
            for v in node.values:
                part = self.value(v.value if isinstance(v, ast.FormattedValue) else v, env)
                if part is _UNKNOWN:
                    return _UNKNOWN
                parts.append(str(part))
            return "".join(parts)
        if isinstance(node, ast.BinOp):
            left, right = self.value(node.left, env), self.value(node.right, env)
            if left is _UNKNOWN or right is _UNKNOWN:
                return _UNKNOWN
            try:
                if isinstance(node.op, ast.Add):
                    return left + right
                if isinstance(node.op, ast.Mod) and isinstance(left, str):
                    return left % (tuple(right) if isinstance(right, list) else right)
            except (TypeError, ValueError):
                return _UNKNOWN
            return _UNKNOWN
        if isinstance(node, ast.Call):
            name = _call_name(node)
            if name == "text" and node.args:
                return self.value(node.args[0], env)
            if name == "format" and isinstance(node.func, ast.Attribute):
                base = self.value(node.func.value, env)
                args = [self.value(a, env) for a in node.args]
                kwargs = {k.arg: self.value(k.value, env) for k in node.keywords if k.arg}
                if isinstance(base, str) and _UNKNOWN not in args and _UNKNOWN not in kwargs.values():
                    try:
                        return base.format(*args, **kwargs)
                    except (IndexError, KeyError, ValueError):
                        return _UNKNOWN
            if name == "f" and node.args:  # op.f("ix_name")
                return self.value(node.args[0], env)
        return _UNKNOWN

    def _assign(self, node, env):
        value = self.value(node.value, env)
        for target in node.targets:
            self._bind(target, value, env)
            call = node.value
            if isinstance(target, ast.Name) and isinstance(call, ast.Call) and _call_name(call) in ("table", "Table"):
                self.tables[target.id] = self.text(_arg(call, 0, "name"), env, "table")

    def _bind(self, target, value, env):
        if isinstance(target, ast.Name):
            env[target.id] = value
        elif isinstance(target, (ast.Tuple, ast.List)):
            values = value if isinstance(value, list) and len(value) == len(target.elts) else None
            for i, elt in enumerate(target.elts):
                self._bind(elt, values[i] if values else _UNKNOWN, env)

    def text(self, node, env, what):
        """A name for the reasons: the constant, or what it is when it is computed at run time."""
        value = self.value(node, env)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return str(value)
        return "<%s computed at run time>" % what

    # -- statements
    def function(self, func, env, conditional, where):
        if func.name in self.stack:
            self.unknown.append("%s() calls itself: the classifier cannot follow it" % func.name)
            return
        self.stack.append(func.name)
        self.body(func.body, env, conditional, where)
        self.stack.pop()

    def body(self, statements, env, conditional, where):
        for st in statements:
            self.statement(st, env, conditional, where)

    def statement(self, st, env, conditional, where):
        if isinstance(st, ast.Raise):
            exc = st.exc.func if isinstance(st.exc, ast.Call) else st.exc
            name = exc.attr if isinstance(exc, ast.Attribute) else exc.id if isinstance(exc, ast.Name) else "an error"
            self.raises.append((name, not conditional, where))
        elif isinstance(st, ast.Assign):
            self.expressions(st.value, env, conditional, where)
            self._assign(st, env)
        elif isinstance(st, (ast.AugAssign, ast.AnnAssign)):
            self.expressions(st, env, conditional, where)
            if isinstance(st.target, ast.Name):
                env[st.target.id] = _UNKNOWN if isinstance(st, ast.AugAssign) else self.value(st.value, env)
        elif isinstance(st, (ast.For, ast.AsyncFor)):
            self.expressions(st.iter, env, conditional, where)
            items = self.value(st.iter, env)
            if isinstance(items, list) and 0 < len(items) <= 100:
                for item in items:
                    self._bind(st.target, item, env)
                    self.body(st.body, env, True, where)
            else:
                self._bind(st.target, _UNKNOWN, env)
                self.body(st.body, env, True, where)
            self.body(st.orelse, env, True, where)
        elif isinstance(st, (ast.If, ast.While)):
            self.expressions(st.test, env, conditional, where)
            self.body(st.body, env, True, where)
            self.body(st.orelse, env, True, where)
        elif isinstance(st, (ast.With, ast.AsyncWith)):
            pushed = 0
            for item in st.items:
                call = item.context_expr
                self.expressions(call, env, conditional, where)
                if isinstance(call, ast.Call) and _call_name(call) == "batch_alter_table":
                    self.batch.append(self.text(_arg(call, 0, "table_name"), env, "table"))
                    pushed += 1
            self.body(st.body, env, conditional, where)
            del self.batch[len(self.batch) - pushed :]
        elif isinstance(st, ast.Try) or type(st).__name__ == "TryStar":
            self.body(st.body, env, True, where)
            for handler in st.handlers:
                self.body(handler.body, env, True, where)
            self.body(st.orelse, env, True, where)
            self.body(st.finalbody, env, conditional, where)
        elif isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef)):
            self.functions[st.name] = st  # a nested helper: followed where it is called
        elif isinstance(st, (ast.Import, ast.ImportFrom, ast.Pass, ast.Break, ast.Continue, ast.Global)):
            return
        else:
            self.expressions(st, env, conditional, where)

    def expressions(self, node, env, conditional, where):
        # Statements built inside an execute() are judged by the execute() itself.
        inside = set()
        for sub in ast.walk(node):
            if isinstance(sub, ast.Call) and _call_name(sub) in ("execute", "exec_driver_sql"):
                for arg in sub.args:
                    inside.update(id(n) for n in ast.walk(arg))
        for sub in ast.walk(node):
            if isinstance(sub, ast.Call):
                if id(sub) in inside and _call_name(sub) in ("delete", "update", "drop"):
                    continue
                self.call(sub, env, conditional, where)
            elif isinstance(sub, ast.Lambda):
                self.unknown.append("%s uses a lambda: the classifier cannot follow it" % where)

    # -- calls
    def call(self, node, env, conditional, where):
        name = _call_name(node)
        func = node.func
        if isinstance(func, ast.Name) and func.id in self.functions:
            helper = self.functions[func.id]
            inner = {}
            params = [a.arg for a in helper.args.args]
            for i, arg in enumerate(node.args):
                if i < len(params):
                    inner[params[i]] = self.value(arg, env)
            for kw in node.keywords:
                if kw.arg:
                    inner[kw.arg] = self.value(kw.value, env)
            defaults = helper.args.defaults
            for param, default in zip(params[len(params) - len(defaults) :], defaults):  # noqa: B905
                inner.setdefault(param, self.value(default, {}))
            for param in params:
                inner.setdefault(param, _UNKNOWN)
            self.function(helper, inner, conditional, "%s() (called from %s)" % (helper.name, where))
            return
        if name == "drop_table":
            table = self.text(_arg(node, 0, "table_name", "name"), env, "table")
            schema = self.value(_arg(node, 99, "schema"), env)
            self.lost.append("drops table %s" % (("%s.%s" % (schema, table)) if isinstance(schema, str) else table))
        elif name == "drop_column":
            if self.batch and isinstance(func, ast.Attribute) and _arg(node, 1, "__never__") is None:
                table, column = self.batch[-1], self.text(_arg(node, 0, "column_name"), env, "column")
            else:
                table = self.text(_arg(node, 0, "table_name"), env, "table")
                column = self.text(_arg(node, 1, "column_name"), env, "column")
            self.lost.append("drops column %s.%s" % (table, column))
        elif name == "alter_column":
            self._alter_column(node, env)
        elif name in ("execute", "exec_driver_sql"):
            self._execute(node, env, where)
        elif name in ("delete", "update", "drop"):
            self._statement_call(node, env, where)
        elif name == "bulk_delete":
            self.lost.append("deletes rows")
        elif name in _SAFE_CALLS:
            return
        elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Call):
            # A method of a construct built in place (sa.Table(...).something()): judged by its name above.
            self.unknown.append("%s calls .%s(), which the classifier cannot follow" % (where, name))
        else:
            self.unknown.append(
                "%s calls %s(), which is not in the migration file: the classifier cannot follow it"
                % (where, _dotted(func) or "a computed function")
            )

    def _execute(self, node, env, where):
        if not node.args:
            return
        arg = node.args[0]
        sql = self.value(arg, env)
        if isinstance(sql, str):
            lost, unknown = _sql_findings(sql)
            self.lost.extend(lost)
            self.unknown.extend(unknown)
            return
        found = self._statement_reasons(arg, env)
        if found:
            self.lost.extend(found)
        elif isinstance(arg, ast.Call) and _call_name(arg) in ("insert", "values") and not _mentions(arg, "update"):
            return  # an INSERT built with SQLAlchemy keeps the data
        else:
            self.unknown.append("%s runs SQL that is built at run time: it cannot be read before it runs" % where)

    def _statement_call(self, node, env, where):
        found = self._statement_reasons(node, env)
        if found:
            self.lost.extend(found)

    def _statement_reasons(self, node, env):
        """Reasons for an SQLAlchemy statement or ``Table.drop()``: ``t.delete()``, ``sa.update(t).values(c=None)``."""
        chain = []
        cur = node
        while isinstance(cur, ast.Call):
            chain.append(cur)
            cur = cur.func.value if isinstance(cur.func, ast.Attribute) else None
        names = [_call_name(c) for c in chain]
        table = None
        for c in chain:
            if _call_name(c) in ("table", "Table") and c.args:
                table = self.text(c.args[0], env, "table")
        for c in chain:
            if table is None and _call_name(c) in ("delete", "update", "query") and c.args:
                table = self._table_of(c.args[0], env)
        if table is None and isinstance(cur, ast.Name) and cur.id in self.tables:
            table = self.tables[cur.id]
        if table is None and isinstance(cur, ast.Name) and names and names[-1] in ("delete", "update", "drop"):
            table = "the table object %s" % cur.id
        table = table or "<a table computed at run time>"
        if "delete" in names:
            return ["deletes rows from %s" % table]
        if "update" in names:
            out = []
            for c in chain:
                if _call_name(c) == "values":
                    for kw in c.keywords:
                        if isinstance(kw.value, ast.Constant) and kw.value.value is None:
                            out.append("sets column %s.%s to NULL" % (table, kw.arg))
                        elif kw.arg:
                            out.append("overwrites column %s.%s (its old values are lost)" % (table, kw.arg))
            return out or ["overwrites rows of %s" % table]
        if names and names[0] == "drop":
            if table != "<a table computed at run time>" or any(n in ("table", "Table") for n in names):
                return ["drops table %s" % table]
            return []
        return []

    def _table_of(self, node, env):
        value = self.value(node, env)
        if isinstance(value, str):
            return value
        if isinstance(node, ast.Call) and _call_name(node) in ("table", "Table") and node.args:
            return self.text(node.args[0], env, "table")
        if isinstance(node, ast.Name):
            return self.tables.get(node.id) or node.id
        return None

    def _alter_column(self, node, env):
        kw = {k.arg: k.value for k in node.keywords}
        if "type_" not in kw:
            return
        if self.batch and _arg(node, 1, "__never__") is None:
            table, column = self.batch[-1], self.text(_arg(node, 0, "column_name"), env, "column")
        else:
            table = self.text(_arg(node, 0, "table_name"), env, "table")
            column = self.text(_arg(node, 1, "column_name"), env, "column")
        new_name, new_len = _type_length(kw["type_"], self, env)
        old_len = None
        if "existing_type" in kw:
            _old_name, old_len = _type_length(kw["existing_type"], self, env)
        if old_len is None:
            old_len = _live_length((self.live_columns.get(table) or {}).get(column))
        where = "%s.%s" % (table, column)
        if new_len is not None and old_len is not None:
            if new_len < old_len:
                self.lost.append("narrows column %s from length %s to %s" % (where, old_len, new_len))
            return
        self.lost.append("changes the type of column %s to %s (may narrow it)" % (where, new_name))


def _dotted(node):
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return "%s.%s" % (base, node.attr) if base else node.attr
    return None


def _mentions(node, name):
    return any(isinstance(n, ast.Call) and _call_name(n) == name for n in ast.walk(node))


def _type_length(node, analyser=None, env=None):
    """``sa.String(40)`` -> ("String", 40); anything else -> (name or None, None)."""
    if isinstance(node, ast.Call):
        name = _call_name(node)
        length = analyser.value(_arg(node, 0, "length"), env or {}) if analyser else None
        return name, length if isinstance(length, int) and not isinstance(length, bool) else None
    if isinstance(node, ast.Attribute):
        return node.attr, None
    if isinstance(node, ast.Name):
        return node.id, None
    return None, None


def _live_length(type_text):
    m = re.search(r"\((\d+)\)", type_text or "")
    return int(m.group(1)) if m else None


def classify_alembic_source(source, live_columns=None):
    """Classify the ``downgrade()`` of an Alembic revision file's source.

    Returns ``{"destructive", "irreversible", "runnable", "unclassified", "reasons"}``. The helper
    functions of the file that ``downgrade()`` calls are followed, with the file's constants;
    ``live_columns`` (table -> column -> type text) lets a type change be judged against the live
    schema. Any ``raise`` makes the step irreversible; a ``raise`` that always happens, or a
    ``NotImplementedError``, means it cannot run at all.
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
    analyser = _Analyser(tree, live_columns)
    analyser.function(func, {}, False, "downgrade()")
    lost, unknown = _unique(analyser.lost), _unique(analyser.unknown)
    if analyser.raises:
        reasons = []
        runnable = True
        for name, always, where in analyser.raises:
            inside = "" if where == "downgrade()" else " in %s" % where
            if name == "NotImplementedError" or always:
                runnable = False
                reasons.append("downgrade() raises %s%s" % (name, inside))
            else:
                reasons.append("downgrade() may raise %s%s: the schema may not be reverted" % (name, inside))
        return _verdict(bool(lost), True, runnable, _unique(reasons) + lost + unknown, bool(unknown))
    return _verdict(bool(lost) or bool(unknown), False, True, lost + unknown, bool(unknown))


def classify_sql_script(text):
    """Classify a ``.down.sql`` script's text (None when the script is missing)."""
    if text is None:
        return _verdict(False, True, False, ["there is no down script"])
    if sql_is_empty(text):
        return _verdict(False, True, True, ["the down script is empty: the schema would not be reverted"])
    lost, unknown = _sql_findings(text)
    return _verdict(bool(lost) or bool(unknown), False, True, lost + unknown, bool(unknown))


def _verdict(destructive, irreversible, runnable, reasons, unclassified=False):
    """A step's classification. An *unclassified* step (something the classifier could not read) is
    also marked destructive, so everything that guards destructive steps guards it too."""
    return {
        "destructive": bool(destructive or unclassified),
        "irreversible": irreversible,
        "runnable": runnable,
        "unclassified": bool(unclassified),
        "reasons": reasons,
    }


def needs_approval(step):
    return bool(step.get("destructive") or step.get("irreversible") or step.get("unclassified"))


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
            "down step(s) %s would lose data, cannot restore the schema or cannot be analysed (%s): they run "
            "only with an approval made with `release-rollback approve PLAN --approver NAME --destructive`"
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


# ----------------------------------------------------------------------------------- error tails

_URL_PASSWORD = re.compile(r"(?P<pre>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]+)(?P<post>@)")
_NOISE = (
    re.compile(r"^\(Background on this error at: .*\)$"),
    re.compile(r"^\[parameters: .*\]$", re.S),  # bound values may hold data
    re.compile(r"^(The above exception was the direct cause|During handling of the above exception)"),
)


def redact(text, secrets=()):
    """``text`` with URL passwords and each of ``secrets`` replaced by ``***``."""
    text = _URL_PASSWORD.sub(lambda m: m.group("pre") + "***" + m.group("post"), text or "")
    for secret in secrets or ():
        if secret and len(str(secret)) >= 3:
            text = text.replace(str(secret), "***")
    return text


def error_tail(text, secrets=(), limit=900):
    """The meaningful end of a tool's stderr, in one line, secrets redacted.

    For a Python traceback: the exception lines of its last exception (its message may span lines,
    e.g. psycopg's ``connection ... failed: Connection refused`` / ``Is the server running ...``),
    without the frames, SQLAlchemy's ``Background on this error`` link and bound parameters.
    Otherwise the last few lines (``pg_dump: error: ...`` and the hint under it).
    """
    lines = [x.rstrip() for x in redact(text, secrets).splitlines()]
    lines = [x for x in lines if x.strip() and not any(p.match(x.strip()) for p in _NOISE)]
    if not lines:
        return "no output"
    starts = [i for i, x in enumerate(lines) if x.startswith("Traceback (most recent call last)")]
    if starts:
        body = lines[starts[-1] + 1 :]
        i = 0
        while i < len(body) and body[i].startswith(" "):  # the frames and their source lines
            i += 1
        picked = body[i:] or body[-1:]
        # The chained exceptions before the last traceback often carry the driver's own words.
        earlier = [
            x
            for x in lines[: starts[-1]]
            if not x.startswith((" ", "Traceback")) and re.match(r"^[\w.]+(Error|Exception|Warning)\b", x)
        ]
        if earlier and not any(_core(earlier[-1]) in x for x in picked):
            picked = [earlier[-1]] + picked
    else:
        picked = lines[-3:]
    out = " / ".join(x.strip() for x in picked)
    return out if len(out) <= limit else "..." + out[-(limit - 3) :]


def _core(line):
    return line.split(":", 1)[-1].strip()[:60]


# ------------------------------------------------------------------------------ database identity

# What proves two connections reach the same database: the server (PostgreSQL's system identifier;
# MariaDB/MySQL's host name, port and data directory) plus the database itself. Every value is
# text, so psql, the mariadb client and SQLAlchemy give the same answer.
IDENTITY_SQL = {
    "postgresql": "SELECT (SELECT system_identifier::text FROM pg_control_system()), current_database(), "
    "(SELECT oid::text FROM pg_database WHERE datname = current_database()), pg_is_in_recovery()::text",
    "mysql": "SELECT @@hostname, CAST(@@port AS CHAR), @@datadir, DATABASE()",
}
_IDENTITY_KEYS = {
    "postgresql": ("system_identifier", "database", "oid", "standby"),
    "mysql": ("hostname", "port", "datadir", "database"),
}


def identity_from_row(dialect, row):
    """The identity dict of a database from the row of ``IDENTITY_SQL[dialect]``."""
    values = ["" if v is None else str(v) for v in row]
    ident = {"dialect": dialect}
    ident.update(zip(_IDENTITY_KEYS[dialect], values))  # noqa: B905
    return ident


def sqlite_identity(path):
    """The identity of an SQLite file: its real path, device and inode. Raises OSError when it is missing."""
    st = os.stat(path)
    return {"dialect": "sqlite", "file": os.path.realpath(path), "device": str(st.st_dev), "inode": str(st.st_ino)}


def same_database(a, b):
    """Whether two identities name the same database (None when either is unknown)."""
    if not a or not b:
        return None
    if a.get("dialect") != b.get("dialect"):
        return False
    keys = ("device", "inode") if a["dialect"] == "sqlite" else _IDENTITY_KEYS.get(a["dialect"], ())
    return all(a.get(k) == b.get(k) for k in keys)


def describe_identity(ident):
    """One phrase naming the database an identity stands for."""
    if not ident:
        return "an unknown database"
    d = ident.get("dialect")
    if d == "sqlite":
        return "SQLite file %s (device %s, inode %s)" % (ident.get("file"), ident.get("device"), ident.get("inode"))
    if d == "postgresql":
        return "PostgreSQL database %s (oid %s) on the cluster with system identifier %s%s" % (
            ident.get("database"),
            ident.get("oid"),
            ident.get("system_identifier"),
            ", a standby" if ident.get("standby") == "true" else "",
        )
    if d == "mysql":
        return "MariaDB/MySQL database %s on server %s:%s (data directory %s)" % (
            ident.get("database") or "(none selected)",
            ident.get("hostname"),
            ident.get("port"),
            ident.get("datadir"),
        )
    return str(ident)


# ------------------------------------------------------------------------------------ run record
#
# The run's record on the database host, next to its backups: which backup is the run's restore
# point (the first one, taken before anything changed), every backup since, the steps applied, the
# step running and a half-applied step. Written before each change, so even an attempt that was
# killed before it published anything leaves the restore point findable by the next attempt.


def run_record_path(backup_dir, run_id):
    """The database stage's record of the run in ``backup_dir`` (``runrecord``, shared by every stage)."""
    return _runrecord.path(backup_dir, run_id)


def load_run_record(path):
    return _runrecord.load(path)


def save_run_record(path, record):
    """Write the record atomically, readable by its owner only, never through a link."""
    _runrecord.save(path, record)


def public_backup(entry):
    """A backup as the report shows it (no schema snapshot)."""
    return {k: v for k, v in (entry or {}).items() if k != "schema"}


# ----------------------------------------------------------------------------- backup verification


def pg_archive_tables(listing):
    """Table names in the output of ``pg_restore --list`` (``schema.table`` and ``table``)."""
    names = set()
    for line in (listing or "").splitlines():
        m = re.match(r"^\d+;\s+\d+\s+\d+\s+TABLE\s+(\S+)\s+(\S+)", line)
        if m:
            names.update((m.group(2), "%s.%s" % (m.group(1), m.group(2))))
    return names


def mysql_dump_tables(path):
    """``(tables the dump creates, whether it ends with mariadb-dump's "Dump completed" line)``."""
    names = set()
    last = ""
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            m = re.match(r"^CREATE TABLE `((?:[^`]|``)+)`", line)
            if m:
                names.add(m.group(1).replace("``", "`"))
            if line.strip():
                last = line
    return names, last.startswith("-- Dump completed")


def missing_tables(expected, found):
    return sorted(t for t in expected or () if t not in found)


# The helper the module runs in the application's Python (where SQLAlchemy, the database driver
# and Alembic are installed), reading a JSON request on stdin and the URL from DATABASE_URL (and the
# application's own variable). ``env`` runs the application's env.py as ``alembic current`` does and
# reads, on the connection env.py opened, the revision and the identity of the database: what the
# migration tool really talks to. An SQLite file that does not exist is an error, never created.
HELPER = r"""
import json, os, sys, sqlite3, sqlite3.dbapi2
req = json.load(sys.stdin)
out = {}
_connect = sqlite3.dbapi2.connect
def _no_new_file(database, *args, **kwargs):
    path = str(database)
    if not kwargs.get("uri") and not path.startswith("file:") and path not in ("", ":memory:") \
            and not os.path.exists(path):
        raise sqlite3.OperationalError(
            "the SQLite database file %s does not exist (it was not created)" % os.path.abspath(path))
    return _connect(database, *args, **kwargs)
sqlite3.connect = sqlite3.dbapi2.connect = _no_new_file
def _identity(conn):
    from sqlalchemy import text
    name = conn.dialect.name
    if name == "sqlite":
        rows = conn.execute(text("PRAGMA database_list")).fetchall()
        path = [r[2] for r in rows if r[1] == "main"][0]
        st = os.stat(path)
        return {"dialect": "sqlite", "file": os.path.realpath(path), "device": str(st.st_dev), "inode": str(st.st_ino)}
    dialect = "mysql" if name in ("mysql", "mariadb") else name
    row = conn.execute(text(req["identity_sql"][dialect])).first()
    return {"dialect": dialect, "row": [None if v is None else str(v) for v in row]}
def _schema(conn):
    from sqlalchemy import inspect
    insp = inspect(conn)
    tables = {}
    for t in insp.get_table_names():
        tables[t] = {c["name"]: str(c["type"]) for c in insp.get_columns(t)}
        for ix in insp.get_indexes(t):
            tables[t]["@index " + str(ix["name"])] = ",".join(str(c) for c in ix.get("column_names") or [])
    return tables
if req.get("env"):
    from alembic.config import Config
    from alembic.runtime.environment import EnvironmentContext
    from alembic.script import ScriptDirectory
    cfg = Config(req["config"])
    script = ScriptDirectory.from_config(cfg)
    seen = {}
    def _look(rev, context):
        seen["heads"] = list(context.get_current_heads())
        if context.connection is None:
            seen["error"] = "env.py opened no database connection (offline mode)"
        else:
            seen["identity"] = _identity(context.connection)
        return []
    with EnvironmentContext(cfg, script, fn=_look, dont_mutate=True):
        script.run_env()
    out["env"] = seen
upper = lower = None
if req.get("revisions") is not None:
    upper, lower = req["revisions"]
elif req.get("down_to") is not None:
    # Read with the revision: the steps from the one head env.py saw down to the target, same process.
    heads = out.get("env", {}).get("heads") or []
    if len(heads) == 1 and heads[0] != req["down_to"]:
        upper, lower = heads[0], req["down_to"]
if upper is not None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    script = ScriptDirectory.from_config(Config(req["config"]))
    try:
        revs = list(script.iterate_revisions(upper, lower))
    except Exception as exc:
        if req.get("revisions") is None:
            revs = None
            out["revisions_error"] = "%s: %s" % (exc.__class__.__name__, exc)
        else:
            print(json.dumps({"error": "%s: %s" % (exc.__class__.__name__, exc)}))
            sys.exit(0)
if upper is not None and revs is not None:
    out["down"] = [upper, lower]
    out["revisions"] = []
    for r in revs:
        down = r.down_revision
        if isinstance(down, (tuple, list)):
            out["revisions"].append({"revision": r.revision, "down": list(down), "path": r.path, "merge": True})
        else:
            out["revisions"].append({"revision": r.revision, "down": down, "path": r.path})
if req.get("schema") or req.get("queries") or req.get("identity"):
    from sqlalchemy import create_engine, text
    engine = create_engine(os.environ["DATABASE_URL"])
    try:
        with engine.connect() as conn:
            out["identity"] = _identity(conn)
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
"""
