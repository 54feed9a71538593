# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Knex: a Node application's migrations, undone one at a time with ``knex migrate:down <name>``.

The application's own ``knex`` runs from its directory (its ``knexfile.js``), with the database URL in
``DATABASE_URL``. The revision is the newest applied migration's file name in ``knex_migrations``;
a held ``knex_migrations_lock`` is a migration interrupted (or running now). Each step is classified
from the source of the migration's ``down`` function; whatever the classifier does not know is
unclassified (it fails closed).
"""

from __future__ import annotations

import json
import os
import re

from ansible_collections.release.rollback.plugins.module_utils import dbmigrate as _db
from ansible_collections.release.rollback.plugins.module_utils.dbtools import base

try:
    from urllib.parse import quote
except ImportError:  # pragma: no cover
    from urllib import quote  # type: ignore

# The file kinds knex loads from a migrations directory (its default loadExtensions).
EXTENSIONS = (".co", ".coffee", ".eg", ".iced", ".js", ".cjs", ".litcoffee", ".ls", ".ts")
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

# ------------------------------------------------------------------------- the down() classifier

_TOKEN = re.compile(
    r"""(?P<space>\s+)
    |(?P<comment>//[^\n]*|/\*.*?\*/)
    |(?P<str>'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")
    |(?P<tpl>`(?:[^`\\]|\\.)*`)
    |(?P<num>\d[\w.]*)
    |(?P<id>[A-Za-z_$][\w$]*)
    |(?P<punct>=>|\.\.\.|[^\s\w'"`])""",
    re.S | re.X,
)

# Calls that change no data: the schema builder's column and index definitions, the query builder's
# reads and inserts, and the plumbing of promises.
SAFE_CALLS = frozenset(
    (
        "createTable",
        "createTableIfNotExists",
        "createTableLike",
        "createView",
        "createViewOrReplace",
        "table",
        "alterTable",
        "renameTable",
        "renameColumn",
        "index",
        "dropIndex",
        "unique",
        "dropUnique",
        "foreign",
        "dropForeign",
        "references",
        "inTable",
        "onDelete",
        "onUpdate",
        "primary",
        "dropPrimary",
        "increments",
        "bigIncrements",
        "integer",
        "bigInteger",
        "tinyint",
        "smallint",
        "mediumint",
        "bigint",
        "text",
        "string",
        "float",
        "double",
        "decimal",
        "boolean",
        "bool",
        "date",
        "datetime",
        "time",
        "timestamp",
        "timestamps",
        "binary",
        "enum",
        "enu",
        "json",
        "jsonb",
        "uuid",
        "geometry",
        "geography",
        "point",
        "specificType",
        "notNullable",
        "nullable",
        "setNullable",
        "defaultTo",
        "unsigned",
        "comment",
        "collate",
        "charset",
        "engine",
        "first",
        "after",
        "withSchema",
        "hasTable",
        "hasColumn",
        "columns",
        "column",
        "as",
        "insert",
        "into",
        "select",
        "from",
        "where",
        "whereIn",
        "andWhere",
        "orWhere",
        "whereNull",
        "whereNotNull",
        "returning",
        "ignore",
        "check",
        "checkPositive",
        "checkIn",
        "dropChecks",
        "dropView",
        "dropViewIfExists",
        "dropMaterializedView",
        "raw",
        "then",
        "catch",
        "finally",
        "all",
        "resolve",
        "now",
        "fn",
        "schema",
        "knex",
        "Promise",
        "map",
        "forEach",
    )
)
# Calls that lose data; the reason is built from the call's table and arguments.
LOSSY_CALLS = frozenset(
    (
        "dropTable",
        "dropTableIfExists",
        "dropColumn",
        "dropColumns",
        "dropTimestamps",
        "dropSchema",
        "dropSchemaIfExists",
        "truncate",
        "del",
        "delete",
        "update",
        "upsert",
        "merge",
        "alter",
        "dropNullable",
    )
)
_KEYWORDS = frozenset(
    (
        "if",
        "for",
        "while",
        "switch",
        "catch",
        "function",
        "return",
        "typeof",
        "await",
        "async",
        "new",
        "throw",
        "do",
        "else",
        "try",
        "void",
        "in",
        "of",
        "instanceof",
        "delete",
        "super",
        "this",
    )
)


def tokens(source):
    """``[(kind, text), ...]`` of JavaScript source, without spaces and comments (string kinds: str, tpl)."""
    out = []
    pos = 0
    text = source or ""
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:  # an unterminated string or comment: the rest is one opaque token
            out.append(("opaque", text[pos:]))
            break
        pos = m.end()
        kind = m.lastgroup
        if kind not in ("space", "comment"):
            out.append((kind, m.group(kind)))
    return out


def _literal(tok):
    """The value of a string token (a template without ``${}``), or None."""
    kind, text = tok
    if kind == "str" or (kind == "tpl" and "${" not in text):
        body = text[1:-1]
    else:
        return None
    return re.sub(r"\\(.)", r"\1", body)


def _match(toks, i, opening, closing):
    """Index of the token closing the bracket opened at ``i`` (or len(toks))."""
    depth = 0
    for j in range(i, len(toks)):
        if toks[j] == ("punct", opening):
            depth += 1
        elif toks[j] == ("punct", closing):
            depth -= 1
            if depth == 0:
                return j
    return len(toks)


def _function_at(toks, i):
    """The body tokens of the function expression starting at ``i``, or None when it is not one.

    Knows ``function [name](...) {...}``, ``async`` before it, ``(args) => {...}``, ``arg => expr``
    and a method's ``(args) {...}``.
    """
    n = len(toks)
    if i < n and toks[i] == ("id", "async"):
        i += 1
    if i < n and toks[i] == ("id", "function"):
        i += 1
        if i < n and toks[i][0] == "id":
            i += 1
    if i < n and toks[i] == ("punct", "("):
        i = _match(toks, i, "(", ")") + 1
    elif i < n and toks[i][0] == "id":
        i += 1
        if i >= n or toks[i] != ("punct", "=>"):
            return None
    else:
        return None
    if i < n and toks[i] == ("punct", "=>"):
        i += 1
        if i < n and toks[i] == ("punct", "{"):
            end = _match(toks, i, "{", "}")
            return toks[i + 1 : end]
        # An expression body: to the end of the statement or of the enclosing object.
        depth, j = 0, i
        while j < n:
            kind, text = toks[j]
            if kind == "punct" and text in "([{":
                depth += 1
            elif kind == "punct" and text in ")]}":
                if depth == 0:
                    break
                depth -= 1
            elif kind == "punct" and text in (";", ",") and depth == 0:
                break
            j += 1
        return [("id", "return")] + toks[i:j]
    if i < n and toks[i] == ("punct", "{"):
        end = _match(toks, i, "{", "}")
        return toks[i + 1 : end]
    return None


def find_down(source):
    """``(found, body tokens)`` of the migration's ``down``: found is False when there is none; the
    body is None when ``down`` is something the classifier cannot follow (a helper, a require)."""
    toks = tokens(source)
    n = len(toks)
    starts = []
    for i in range(n):
        kind, text = toks[i]
        if kind != "id" or text != "down":
            continue
        prev = toks[i - 1] if i > 0 else None
        nxt = toks[i + 1] if i + 1 < n else None
        if prev == ("punct", ".") and i > 1 and toks[i - 2] == ("id", "exports") and nxt == ("punct", "="):
            starts.append(("expr", i + 2))  # exports.down = ... / module.exports.down = ...
        elif prev == ("id", "function"):
            starts.append(("fn", i - 1 - (1 if i > 1 and toks[i - 2] == ("id", "async") else 0)))
        elif nxt == ("punct", ":") and prev in (("punct", "{"), ("punct", ",")):
            starts.append(("expr", i + 2))  # module.exports = { down: ... }
        elif nxt == ("punct", "(") and prev in (("punct", "{"), ("punct", ","), ("id", "async")):
            starts.append(("expr", i + 1))  # a method: { async down(knex) { ... } }
        elif nxt == ("punct", "=") and prev in (("id", "const"), ("id", "let"), ("id", "var")):
            starts.append(("expr", i + 2))  # export const down = ...
    if not starts:
        return False, None
    _kind, at = starts[0]
    body = _function_at(toks, at)
    if body is None and at < n and toks[at][0] == "id" and at + 1 < n and toks[at + 1][1] in (";", ",", "}"):
        # exports.down = down; resolve ``function down(...)`` / ``const down = ...`` once
        name = toks[at][1]
        for j in range(n - 1):
            if toks[j] == ("id", "function") and toks[j + 1] == ("id", name):
                body = _function_at(toks, j)
                break
            declared = j > 0 and toks[j - 1][1] in ("const", "let", "var")
            if declared and toks[j] == ("id", name) and j + 2 < n and toks[j + 1] == ("punct", "="):
                body = _function_at(toks, j + 2)
                break
    return True, body


def _args(toks, i):
    """The argument tokens of the call whose ``(`` is at ``i``, split at top-level commas."""
    end = _match(toks, i, "(", ")")
    args, cur, depth = [], [], 0
    for tok in toks[i + 1 : end]:
        if tok[0] == "punct" and tok[1] in "([{":
            depth += 1
        elif tok[0] == "punct" and tok[1] in ")]}":
            depth -= 1
        if tok == ("punct", ",") and depth == 0:
            args.append(cur)
            cur = []
        else:
            cur.append(tok)
    if cur:
        args.append(cur)
    return args


def _arg_names(toks, i):
    """The literal names in a call's arguments (``'a'``, ``['a', 'b']``); ``?`` for a computed one."""
    names = []
    for arg in _args(toks, i):
        lits = [_literal(t) for t in arg if t[0] in ("str", "tpl")]
        if lits and all(v is not None for v in lits) and all(t[0] in ("str", "tpl", "punct") for t in arg):
            names += lits
        else:
            names.append("?")
    return names


def _statement_start(toks, i):
    depth = 0
    for j in range(i - 1, -1, -1):
        kind, text = toks[j]
        if kind == "punct" and text in ")]":
            depth += 1
        elif kind == "punct" and text in "([":
            if depth == 0:
                return j + 1
            depth -= 1
        elif kind == "punct" and text in (";", "{", "}") and depth == 0:
            return j + 1
    return 0


def _table_of(toks, i, body):
    """The table a call at ``i`` works on: the query's ``knex('t')`` / ``.from('t')``, or the
    enclosing ``table('t', ...)`` / ``alterTable('t', ...)`` builder; '?' when unknown."""
    start = _statement_start(toks, i)
    for j in range(i - 1, start - 1, -1):
        call = toks[j][0] == "id" and j + 2 < len(toks) and toks[j + 1] == ("punct", "(")
        # knex('orders'), or a member call that names the table
        rooted = j == 0 or toks[j - 1] != ("punct", ".") or toks[j][1] in ("table", "alterTable", "from", "into")
        if call and rooted:
            lit = _literal(toks[j + 2]) if toks[j + 2][0] in ("str", "tpl") else None
            if lit:
                return lit
    for j in range(i - 1, -1, -1):  # the enclosing builder: knex.schema.table('orders', (t) => ...)
        builder = toks[j][0] == "id" and toks[j][1] in ("table", "alterTable", "createTable") and j + 2 < len(toks)
        if builder and toks[j + 1] == ("punct", "(") and _match(toks, j + 1, "(", ")") > i:
            lit = _literal(toks[j + 2]) if toks[j + 2][0] in ("str", "tpl") else None
            return lit or "?"
    return "?"


def _column_before(toks, i):
    """The column a ``.alter()`` at ``i`` redefines: the first literal of its statement."""
    for j in range(_statement_start(toks, i), i):
        if toks[j][0] in ("str", "tpl") and _literal(toks[j]):
            return _literal(toks[j])
    return "?"


def _lossy_reason(name, toks, i, body):
    table = _table_of(toks, i, body)
    call = i + 1 < len(toks) and toks[i + 1] == ("punct", "(")
    names = _arg_names(toks, i + 1) if call else ["?"]
    if name in ("dropTable", "dropTableIfExists"):
        return ["drops table %s" % t for t in names[:1]]
    if name in ("dropSchema", "dropSchemaIfExists"):
        return ["drops schema %s" % t for t in names[:1]]
    if name in ("dropColumn", "dropColumns"):
        return ["drops column %s.%s" % (table, c) for c in names or ["?"]]
    if name == "dropTimestamps":
        return ["drops columns %s.created_at and %s.updated_at" % (table, table)]
    if name == "truncate":
        return ["truncates table %s" % table]
    if name in ("del", "delete"):
        return ["deletes rows from %s" % table]
    if name in ("update", "upsert", "merge"):
        return ["overwrites rows of %s" % table]
    if name == "alter":
        return ["changes the type of column %s.%s (may narrow it)" % (table, _column_before(toks, i))]
    if name == "dropNullable":
        return ["makes column %s.%s NOT NULL (fails or needs a default where it is NULL)" % (table, names[0])]
    return ["calls %s on %s" % (name, table)]


def classify_down(source):
    """Classify a Knex migration file's ``down`` (see ``base.verdict``)."""
    if source is None:
        return base.verdict(irreversible=True, runnable=False, reasons=["the migration file cannot be read"])
    if any(kind == "opaque" for kind, _text in tokens(source)):
        return base.verdict(
            unclassified=True, reasons=["the migration's source cannot be read to its end (an unterminated string)"]
        )
    found, body = find_down(source)
    if not found:
        return base.verdict(irreversible=True, runnable=False, reasons=["there is no down function"])
    if body is None:
        return base.verdict(
            unclassified=True, reasons=["down is not a function the classifier can read (a helper or a require)"]
        )
    meaningful = [t for t in body if t not in (("id", "return"), ("punct", ";"))]
    if not meaningful or meaningful in (
        [("id", "Promise"), ("punct", "."), ("id", "resolve"), ("punct", "("), ("punct", ")")],
    ):
        return base.verdict(irreversible=True, reasons=["the down function is empty: the schema would not be reverted"])
    lost, unknown, irreversible = [], [], []
    runnable = True
    depth = 0
    for i, (kind, text) in enumerate(body):
        if kind == "punct" and text == "{":
            depth += 1
        elif kind == "punct" and text == "}":
            depth -= 1
        if kind != "id":
            continue
        nxt = body[i + 1] if i + 1 < len(body) else None
        if text == "throw":
            message = next((_literal(t) for t in body[i + 1 : i + 8] if t[0] in ("str", "tpl")), None)
            said = " (%s)" % message if message else ""
            if depth == 0:
                runnable = False
                irreversible.append("down() throws%s" % said)
            else:
                irreversible.append("down() may throw%s" % said)
            continue
        if text in LOSSY_CALLS:
            if text == "delete" and not (i > 0 and body[i - 1] == ("punct", ".")):
                continue  # the JavaScript operator
            lost += _lossy_reason(text, body, i, body)
            continue
        if nxt != ("punct", "(") or text in _KEYWORDS:
            continue
        if text == "raw":
            args = _args(body, i + 1)
            sql = _literal(args[0][0]) if args and len(args[0]) == 1 else None
            if sql is None:
                unknown.append("runs SQL built at run time (knex.raw), which cannot be analysed")
                continue
            if "??" in sql:
                unknown.append("runs SQL whose table or column is bound at run time (knex.raw with ??)")
                continue
            found, cannot = _db._sql_findings(sql)
            lost += found
            unknown += cannot
            continue
        if text == "Error" and i > 0 and body[i - 1] == ("id", "new"):
            continue
        if text not in SAFE_CALLS:
            unknown.append("calls %s(), which the classifier cannot follow" % text)
    lost, unknown = _db._unique(lost), _db._unique(unknown)
    if irreversible:
        return base.verdict(bool(lost), True, runnable, _db._unique(irreversible) + lost + unknown, bool(unknown))
    return base.verdict(bool(lost), False, True, lost + unknown, bool(unknown))


# ------------------------------------------------------------------------- the tool

# Reads the knexfile the way knex's CLI does and says which database its connection reaches.
_IDENTITY_JS = r"""
const path = require('path');
const [knexDir, knexfile, envName] = process.argv.slice(1);
(async () => {
  let all = require(path.resolve(knexfile));
  if (all && all.default) all = all.default;
  if (typeof all === 'function') all = await all();
  const name = envName || process.env.NODE_ENV || 'development';
  const config = (all && all[name]) || all;
  const knex = require(knexDir)(config);
  try {
    const dialect = knex.client.dialect;
    if (/sqlite/.test(dialect)) {
      const c = config.connection || {};
      console.log(JSON.stringify({dialect: 'sqlite', file: path.resolve(c.filename || String(c))}));
      return;
    }
    const sql = process.env.RR_IDENTITY_SQL_POSTGRESQL;
    const kind = /postgres/.test(dialect) ? 'postgresql' : (/mysql|maria/.test(dialect) ? 'mysql' : dialect);
    const res = await knex.raw(kind === 'postgresql' ? sql : process.env.RR_IDENTITY_SQL_MYSQL);
    const rows = kind === 'postgresql' ? res.rows : res[0];
    console.log(JSON.stringify({dialect: kind, row: Object.values(rows[0]).map((v) => v === null ? null : String(v))}));
  } finally {
    await knex.destroy();
  }
})().catch((e) => { console.error(String(e && e.stack || e)); process.exit(1); });
"""


class Knex(base.MigrationTool):
    """A Node application's Knex migrations, undone with the application's own ``knex``."""

    name = "knex"
    needs = "migrations"
    engines = ("postgresql", "mysql")
    runs = (
        "`knex migrate:down NAME` one migration at a time, with the application's own knex "
        "(`node_modules/.bin/knex`), from its directory (`migrations:`) and its `knexfile.js`; the URL in "
        "`DATABASE_URL` and `url_env` as Node's drivers read it (`postgres://`, `mysql://`); the revision is the "
        "newest file name in `knex_migrations`, a held `knex_migrations_lock` refuses"
    )
    recognises = (
        "the migration's `down` function: missing or `throw` (cannot run), empty (irreversible), `throw` inside a "
        "branch (irreversible), `dropTable`, `dropColumn(s)`, `dropTimestamps`, `truncate`, `del`/`delete`, "
        "`update`, `.alter()` (destructive), `knex.raw` with a literal SQL string (the SQL classifier); any other "
        "call, and `knex.raw` with SQL built at run time, is unclassified"
    )
    settings_doc = {
        "command": "The command that runs knex; default the application's node_modules/.bin/knex, else knex on PATH.",
        "table": "The migrations table (the knexfile's migrations.tableName); default knex_migrations.",
        "migrations_dir": "The migrations directory, relative to the application's directory; default migrations.",
        "knexfile": "The knexfile, relative to the application's directory; default knexfile.js.",
        "env": "The knexfile's environment (knex --env), when it has several; default NODE_ENV, then development.",
    }

    def __init__(self, module, conn, client):
        base.MigrationTool.__init__(self, module, conn, client)
        self.table = self.settings.get("table") or "knex_migrations"
        if not _TABLE.match(self.table):
            raise base.Fail("database.settings.table %r is not a table name" % self.table)
        self.lock_table = self.table + "_lock"
        self.directory = os.path.join(self.cwd or "", self.settings.get("migrations_dir") or "migrations")
        self.knexfile = os.path.join(self.cwd or "", self.settings.get("knexfile") or "knexfile.js")
        if not os.path.isfile(self.knexfile):
            raise base.Fail(
                "the knexfile %s does not exist: check database.migrations (the application's directory) or "
                "database.settings.knexfile" % self.knexfile
            )
        self.applied = None
        self.now = None  # the revision current() read
        self._identity = None

    # -- the files
    def files(self):
        if not os.path.isdir(self.directory):
            raise base.Fail("the Knex migrations directory %s does not exist" % self.directory)
        return sorted(n for n in os.listdir(self.directory) if n.endswith(EXTENSIONS) and not n.endswith(".d.ts"))

    # -- the database, through the client the backup uses
    def current(self):
        self.dirty = None
        self.applied = []
        self.now = self.base
        if not self.client.has_table(self.table):
            return self.base
        self.applied = [r[0] for r in self.client.rows("SELECT name FROM %s ORDER BY id" % self.table)]
        if self.client.has_table(self.lock_table):
            locked = [r[0] for r in self.client.rows("SELECT is_locked FROM %s" % self.lock_table)]
            if any(str(v).lower() in ("1", "t", "true") for v in locked):
                self.dirty = {"lock": "%s.is_locked = 1" % self.lock_table}
        self.now = sorted(self.applied)[-1] if self.applied else self.base
        return self.now

    def require_clean(self):
        if self.dirty:
            raise base.Fail(
                "%s is held (is_locked = 1): a knex migration was interrupted or is running now. Make sure no "
                "deploy is running, check the schema against knex_migrations, then release the lock with "
                "`knex migrate:unlock`; nothing was changed" % self.lock_table,
                record={"dirty": self.dirty},
            )

    # -- the path down
    def _known(self, rev, files):
        if rev == self.base or rev in files:
            return
        hint = [f for f in files if os.path.splitext(f)[0] == rev]
        raise base.Fail(
            "migration %s is not in %s%s"
            % (rev, self.directory, (": the revision is the file name, %s" % hint[0]) if hint else "")
        )

    def steps(self, current, target, live_schema=None):
        if current == target:
            return []
        files = self.files()
        self._known(current, files)
        self._known(target, files)
        if self.applied is None:
            self.current()
        missing = [a for a in self.applied if a not in files]
        if missing:
            raise base.Fail(
                "%s records migration(s) %s that are not in %s (knex calls the directory corrupt): deploy the "
                "release that has them, or roll back by hand" % (self.table, ", ".join(missing), self.directory)
            )
        top = files.index(current) if current != self.base else -1
        low = files.index(target) if target != self.base else -1
        if top <= low:
            raise base.Fail(
                "migration %s is not below the database's revision %s: nothing to roll back" % (target, current)
            )
        # A path from a revision above the database's (the plan's, when a run stopped part-way) is the
        # files': only what lies at or below the database's revision must be applied.
        now = files.index(self.now) if self.now in files else -1
        steps = []
        for i in range(top, low, -1):
            name = files[i]
            if i <= now and name not in self.applied:
                raise base.Fail(
                    "migration %s, between %s and %s, was never applied (knex ran the migrations out of order): "
                    "roll back by hand" % (name, target, current)
                )
            source = os.path.join(self.directory, name)
            step = {
                "id": name,
                "revision": name,
                "to": files[i - 1] if i > 0 else self.base,
                "source": os.path.relpath(source, self.cwd) if self.cwd else source,
            }
            step.update(classify_down(base.read_text(source)))
            steps.append(step)
        if target != self.base and low <= now and target not in self.applied:
            raise base.Fail("migration %s is not applied: knex cannot stop there" % target)
        return steps

    # -- the command
    def knex(self):
        return self.find_command("knex", os.path.join("node_modules", ".bin", "knex"))

    def node_url(self):
        """The URL in the form Node's drivers read (postgres://, mysql://); the password only here."""
        c = self.conn
        if c["dialect"] == "sqlite":
            return "sqlite:" + self.client.sqlite_path()
        auth = base.userinfo(c)
        host = c.get("host") or "localhost"
        port = ":%s" % c["port"] if c.get("port") else ""
        scheme = "postgres" if c["dialect"] == "postgresql" else "mysql"
        return "%s://%s%s%s/%s" % (scheme, auth, host, port, quote(c["database"], safe=""))

    def _env(self):
        url = self.node_url()
        env = {"DATABASE_URL": url}
        if self.p.get("url_env"):
            env[self.p["url_env"]] = url
        return env

    def _options(self):
        opts = [
            "--knexfile",
            self.knexfile,
            "--migrations-directory",
            self.directory,
            "--migrations-table-name",
            self.table,
        ]
        if self.settings.get("env"):
            opts += ["--env", self.settings["env"]]
        return opts

    def downgrade(self, to, step):
        self.applied = None
        return self.command(self.knex() + ["migrate:down", step["revision"]] + self._options(), env=self._env())

    def migration_identity(self):
        """The database the application's knexfile connects to, read with the application's knex.

        Read once per call of the module: the knexfile and its environment do not change in between.
        """
        if self._identity is None:
            self._identity = self._read_identity()
        return self._identity

    def _read_identity(self):
        cmd = self.knex()
        node = self.module.get_bin_path("node")
        if not node:
            raise base.Fail("node is not installed on the database host: knex cannot run; nothing was changed")
        knex_dir = os.path.dirname(os.path.dirname(os.path.realpath(cmd[-1])))
        if not os.path.isfile(os.path.join(knex_dir, "package.json")):
            return None  # a wrapper command: the identity cannot be read beside it
        env = self._env()
        env["RR_IDENTITY_SQL_POSTGRESQL"] = _db.IDENTITY_SQL["postgresql"]
        env["RR_IDENTITY_SQL_MYSQL"] = _db.IDENTITY_SQL["mysql"]
        argv = [node, "-e", _IDENTITY_JS, knex_dir, self.knexfile, self.settings.get("env") or ""]
        rc, out, err = self.command(argv, env=env)
        if rc != 0:
            why = self.tail(err or out)
            raise base.Fail("reading the database the knexfile reaches failed: %s" % why, detail=why)
        try:
            answer = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            why = self.tail(err or out)
            raise base.Fail("the knexfile's database gave no answer: %s" % why, detail=why) from None
        if answer.get("dialect") == "sqlite":
            try:
                return _db.sqlite_identity(answer["file"])
            except OSError:
                return {"dialect": "sqlite", "file": answer.get("file"), "device": "", "inode": ""}
        if answer.get("dialect") not in _db.IDENTITY_SQL:
            return {"dialect": answer.get("dialect")}
        return _db.identity_from_row(answer["dialect"], answer["row"])


TOOL = Knex
