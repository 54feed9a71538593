# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Django's migrations, run as the application's deploy runs them: its ``manage.py``, its Python
and its settings, with the URL in ``DATABASE_URL`` (and ``url_env``).

A revision is the applied leaf of each app, ``app.migration`` joined by ``+`` and sorted by app
(``billing.0001_initial+shop.0002_order_note``, the form the manifest's ``{app: migration}``
becomes); ``app.zero`` means nothing of the app is applied.

One helper process (``manage.py shell -c``) reads the applied migrations through the project's own
database settings, the identity of the database they reach, Django's own unapply plan to the target
(``MigrationExecutor.migration_plan``, the order ``migrate`` uses) and, per step, the SQL that
``sqlmigrate --backwards`` prints. Each step runs as ``manage.py migrate APP PREVIOUS``.
"""

from __future__ import annotations

import ast
import json
import os

from ansible_collections.release.rollback.plugins.module_utils import dbmigrate as _db
from ansible_collections.release.rollback.plugins.module_utils.dbtools import base

# Run by ``manage.py shell -c`` (the project's settings, django.setup() done); the request on stdin,
# the answer as one JSON line on stdout. Python 3.6+ and Django 3.0+.
HELPER = r"""
import json
import os
import sys

from django.apps import apps as _apps
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.exceptions import IrreversibleError
from django.db.migrations.executor import MigrationExecutor


def _answer(out):
    sys.stdout.write("\n" + json.dumps(out, default=str) + "\n")
    sys.stdout.flush()


def _main(req):
    conn = connections[req.get("database") or DEFAULT_DB_ALIAS]
    out = {"vendor": conn.vendor}
    if conn.vendor == "sqlite":
        name = str(conn.settings_dict.get("NAME") or "")
        path = os.path.abspath(name)
        out["identity"] = {"dialect": "sqlite", "path": path}
        if not name or name.startswith("file:") or ":memory:" in name or not os.path.isfile(path):
            out["identity"]["missing"] = True  # never let Django create the file
            return out
    elif conn.vendor in req["identity_sql"]:
        with conn.cursor() as cur:
            cur.execute(req["identity_sql"][conn.vendor])
            row = cur.fetchone()
        out["identity"] = {"dialect": conn.vendor, "row": ["" if v is None else str(v) for v in row]}
    executor = MigrationExecutor(conn)
    loader = executor.loader
    graph = loader.graph
    live = dict(loader.applied_migrations)

    def in_app(app):
        return [n for n in graph.nodes if n[0] == app]

    def leaves(app, applied):
        mine = [n for n in in_app(app) if n in applied]
        return sorted(
            n[1] for n in mine if not any(c in applied and c[0] == app for c in graph.node_map[n].children)
        )

    def revision(apps, applied):
        parts = []
        for app in sorted(apps):
            top = leaves(app, applied)
            if len(top) > 1:
                raise ValueError(
                    "app %s has several applied leaf migrations (%s): merge them with makemigrations --merge"
                    % (app, ", ".join(top))
                )
            parts.append("%s.%s" % (app, top[0] if top else "zero"))
        return "+".join(parts)

    targets = []
    if req.get("target"):
        for item in req["target"].replace(",", "+").split("+"):
            app, dot, name = item.strip().partition(".")
            if not dot or not name:
                out["error"] = "%r is not app.migration (or app.zero)" % item.strip()
                return out
            if app not in loader.migrated_apps:
                out["error"] = "app %s has no migrations in this project (apps with migrations: %s)" % (
                    app, ", ".join(sorted(loader.migrated_apps)))
                return out
            if name == "zero":
                targets.append((app, None))
                continue
            try:
                targets.append((app, loader.get_migration_by_prefix(app, name).name))
            except Exception as exc:
                out["error"] = "migration %s.%s: %s" % (app, name, exc)
                return out
        apps = sorted(set(a for a, _n in targets))
        if len(apps) != len(targets):
            out["error"] = "an app is named twice in %r" % req["target"]
            return out
        out["target"] = "+".join("%s.%s" % (a, n or "zero") for a, n in sorted(targets))
    else:
        root = os.path.realpath(req["project"]) + os.sep
        apps = sorted(
            c.label for c in _apps.get_app_configs()
            if c.label in loader.migrated_apps and os.path.realpath(c.path).startswith(root)
        )
    out["apps"] = apps
    try:
        out["current"] = revision(apps, live)
    except ValueError as exc:
        out["error"] = str(exc)
        return out
    if not req.get("steps") or not targets:
        return out

    applied = dict(live)
    if req.get("from") and req["from"] != out["current"]:
        # A revision the database was at earlier (a plan's): the same apps at those leaves.
        for item in req["from"].replace(",", "+").split("+"):
            app, _dot, name = item.strip().partition(".")
            for n in in_app(app):
                applied.pop(n, None)
            if name != "zero":
                if (app, name) not in graph.nodes:
                    out["error"] = "migration %s.%s is not in the project" % (app, name)
                    return out
                for n in graph.forwards_plan((app, name)):
                    if n[0] == app:
                        applied[n] = True
    loader.applied_migrations = applied
    try:
        start = revision(apps, applied)
        plan = executor.migration_plan(targets)
    except Exception as exc:
        out["error"] = str(exc)
        return out
    steps, others = [], {}
    state = dict(applied)
    for migration, backwards in plan:
        key = (migration.app_label, migration.name)
        if not backwards:
            out["error"] = "reaching %s applies %s.%s: that is not a rollback from %s" % (
                out["target"], key[0], key[1], start)
            return out
        before = revision(apps, state)
        state.pop(key, None)
        if key[0] not in apps:
            others.setdefault(key[0], []).append("%s.%s" % key)
            continue
        parents = sorted(p[1] for p in graph.node_map[key].parents if p[0] == key[0])
        step = {
            "app": key[0],
            "name": key[1],
            "before": before,
            "after": revision(apps, state),
            "parents": parents,
            "path": getattr(sys.modules.get(migration.__module__), "__file__", None),
        }
        if req.get("sql"):
            try:
                step["sql"] = "\n".join(loader.collect_sql([(migration, True)]))
            except IrreversibleError as exc:
                step["irreversible"] = str(exc)
            except Exception as exc:
                step["sql_error"] = "%s: %s" % (type(exc).__name__, exc)
        steps.append(step)
    if others:
        extra = sorted(set(apps) | set(others))
        names = ("app " if len(others) == 1 else "apps ") + ", ".join(sorted(others))
        out["error"] = (
            "rolling back to %s also unapplies %s, because %s depend%s on what is rolled back: name %s in "
            "target_revision too, e.g. %s" % (
                out["target"],
                ", ".join(sorted(m for ms in others.values() for m in ms)),
                names,
                "s" if len(others) == 1 else "",
                names,
                revision(extra, state),
            )
        )
        return out
    out["from"] = start
    out["steps"] = steps
    return out


_answer(_main(json.loads(sys.stdin.read())))
"""

# Django's own operations; anything else is a custom operation whose down the classifier cannot read.
_SCHEMA_OPS = frozenset(
    (
        "CreateModel",
        "AddField",
        "AlterField",
        "RenameField",
        "RenameModel",
        "AlterModelTable",
        "AlterModelTableComment",
        "AlterModelOptions",
        "AlterModelManagers",
        "AlterUniqueTogether",
        "AlterIndexTogether",
        "AlterOrderWithRespectTo",
        "AddIndex",
        "RemoveIndex",
        "RenameIndex",
        "AddConstraint",
        "RemoveConstraint",
        "AlterConstraint",
        "AddIndexConcurrently",
        "RemoveIndexConcurrently",
        "AddConstraintNotValid",
        "ValidateConstraint",
        "CreateExtension",
        "BtreeGinExtension",
        "BtreeGistExtension",
        "CITextExtension",
        "CryptoExtension",
        "HStoreExtension",
        "TrigramExtension",
        "UnaccentExtension",
        "CreateCollation",
        "RemoveCollation",
    )
)


def _text(node):
    if node is None:
        return "?"
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    try:
        return ast.unparse(node)
    except AttributeError:  # Python < 3.9
        return node.__class__.__name__


def _is_none(node):
    return node is None or (isinstance(node, ast.Constant) and node.value is None)


def _is_noop(node):
    return isinstance(node, ast.Attribute) and node.attr == "noop"


def _operations(source):
    """The ``operations`` list of the ``Migration`` class, or None when it is not a literal list."""
    tree = ast.parse(source)
    for cls in tree.body:
        if not isinstance(cls, ast.ClassDef):
            continue
        for stmt in cls.body:
            if isinstance(stmt, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "operations" for t in stmt.targets
            ):
                return list(stmt.value.elts) if isinstance(stmt.value, (ast.List, ast.Tuple)) else None
    return None


def classify_operations(source):
    """What a migration's source says about undoing it: ``(unrunnable, data_not_restored, review)``,
    three lists of reasons (the SQL ``sqlmigrate --backwards`` prints is classified apart)."""
    unrunnable, lost, review = [], [], []
    try:
        ops = _operations(source)
    except (SyntaxError, ValueError) as exc:
        return [], [], ["the migration file cannot be parsed (%s)" % exc]
    if ops is None:
        return [], [], ["the migration's operations are not a literal list: they cannot be read"]
    todo = list(ops)
    while todo:
        op = todo.pop(0)
        name = _db._call_name(op) if isinstance(op, ast.Call) else None
        if name is None:
            review.append("operation %s cannot be read" % _text(op)[:80])
        elif name == "RunPython":
            code, back = _text(_db._arg(op, 0, "code")), _db._arg(op, 1, "reverse_code")
            if _is_none(back):
                unrunnable.append("RunPython(%s) has no reverse_code: Django raises IrreversibleError" % code)
            elif _is_noop(back):
                review.append(
                    "RunPython(%s) is undone with RunPython.noop: the data it changed stays as it is (review)" % code
                )
            else:
                review.append("RunPython reverse_code %s runs Python the classifier cannot read" % _text(back))
        elif name == "RunSQL":
            back = _db._arg(op, 1, "reverse_sql")
            if _is_none(back):
                unrunnable.append("RunSQL has no reverse_sql: Django raises IrreversibleError")
            elif _is_noop(back):
                review.append("RunSQL is undone with RunSQL.noop: what its SQL changed stays as it is (review)")
            # A reverse_sql is in what sqlmigrate --backwards prints, and classified there.
        elif name == "RemoveField":
            model, field = _text(_db._arg(op, 0, "model_name")), _text(_db._arg(op, 1, "name"))
            lost.append("undoing RemoveField re-creates column %s.%s empty: its data is not restored" % (model, field))
        elif name == "DeleteModel":
            lost.append(
                "undoing DeleteModel re-creates model %s's table empty: its rows are not restored"
                % _text(_db._arg(op, 0, "name"))
            )
        elif name == "SeparateDatabaseAndState":
            more = _db._arg(op, 0, "database_operations")
            if isinstance(more, (ast.List, ast.Tuple)):
                todo[:0] = list(more.elts)
            elif not _is_none(more):
                review.append("SeparateDatabaseAndState's database_operations cannot be read")
        elif name not in _SCHEMA_OPS:
            review.append("operation %s is not one of Django's: what its down does cannot be read" % name)
    return unrunnable, lost, review


def classify_step(source, sql=None, irreversible=None, sql_error=None):
    """A step's verdict from the migration's source and the SQL of its down (``sqlmigrate --backwards``)."""
    if source is None:
        unrunnable, lost, review = [], [], ["the migration file cannot be read"]
    else:
        unrunnable, lost, review = classify_operations(source)
    if irreversible and not unrunnable:
        unrunnable.append("Django says: %s" % irreversible)
    dropped, unknown = [], []
    if sql_error:
        unknown.append("sqlmigrate --backwards could not print the down's SQL (%s)" % sql_error[:200])
    elif sql and not _db.sql_is_empty(sql):
        verdict = _db.classify_sql_script(sql)
        if verdict["unclassified"]:
            unknown += verdict["reasons"]
        else:
            dropped += verdict["reasons"]
    reasons = unrunnable + lost + dropped + review + unknown
    return base.verdict(
        destructive=bool(dropped or lost),
        irreversible=bool(unrunnable or lost),
        runnable=not unrunnable,
        reasons=reasons,
        unclassified=bool(review or unknown),
    )


class Django(base.MigrationTool):
    """The project's ``manage.py migrate APP MIGRATION``, one migration at a time."""

    name = "django"
    title = "Django"
    needs = "migrations"
    per_app = True
    engines = ("postgresql", "sqlite")
    runs = (
        "`manage.py migrate APP PREVIOUS` one migration at a time in Django's unapply order, from the project "
        "directory (`migrations:`) with the application's Python (`python:`) and settings, the URL in "
        "`DATABASE_URL` and `url_env`; `target_revision: {app: migration}` (`zero` for none)"
    )
    recognises = (
        "the SQL `sqlmigrate --backwards` prints (the SQL classifier); `RunPython` without `reverse_code` and "
        "`RunSQL` without `reverse_sql` cannot run; `RemoveField`/`DeleteModel` come back empty; `RunPython.noop`, "
        "`RunSQL.noop`, Python reverse code and custom operations need review"
    )
    settings_doc = {
        "manage_py": "the project's manage.py, relative to `migrations:` (default manage.py)",
        "database": "the Django database alias to migrate (default `default`)",
    }

    def __init__(self, module, conn, client):
        base.MigrationTool.__init__(self, module, conn, client)
        self.manage = os.path.join(self.cwd, self.settings.get("manage_py") or "manage.py")
        if not os.path.isfile(self.manage):
            raise base.Fail("the Django project has no %s: point database.migrations at its directory" % self.manage)
        self.alias = self.settings.get("database") or "default"
        self.seen = None
        # The first read (revision, identity, steps to the target, their SQL), for steps() to take once.
        self._read = {}
        self._first = True

    def manage_py(self, args, data=None):
        argv = [self.python(), self.manage] + args
        return self.module.run_command(argv, cwd=self.cwd, environ_update=self.app_env(), data=data)

    def helper(self, **request):
        request.setdefault("target", self.p.get("target_revision"))
        request.update(database=self.alias, project=self.cwd, identity_sql=_db.IDENTITY_SQL)
        rc, out, err = self.manage_py(["shell", "--verbosity", "0", "-c", HELPER], data=json.dumps(request))
        if rc != 0:
            why = self.client.tail(err or out)
            if "No module named 'django'" in (err or out):
                raise base.Fail(
                    "Django is not importable by %s: set database.python to the application's interpreter (its "
                    "virtualenv's bin/python); nothing was changed" % self.python(),
                    detail=why,
                )
            raise base.Fail("reading the database through Django (manage.py) failed: %s" % why, detail=why)
        try:
            answer = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            why = self.client.tail(err or out)
            raise base.Fail("reading the database through Django gave no answer: %s" % why, detail=why) from None
        ident = answer.get("identity")
        if isinstance(ident, dict) and ident.get("dialect") == "sqlite":
            if ident.get("missing"):
                raise base.Fail(
                    "the project's Django settings reach the SQLite database %s, which does not exist (it was "
                    "not created): check its database settings and DATABASE_URL; nothing was changed" % ident["path"]
                )
            answer["identity"] = _db.sqlite_identity(ident["path"])
        elif isinstance(ident, dict) and "row" in ident:
            answer["identity"] = _db.identity_from_row(ident["dialect"], ident["row"])
        return answer

    def _check(self, answer, target):
        if answer.get("error"):
            raise base.Fail("Django's migrations: %s; nothing was changed" % answer["error"])
        self._check_form(answer, target)

    def _check_form(self, answer, target):
        """The target as Django names it (full names, sorted by app), or one sentence with the form to write."""
        if target is not None and answer.get("target") != target:
            raise base.Fail(
                "target_revision %r names the migrations %s: write it as %r (app.migration, full names, joined by + "
                "and sorted by app); nothing was changed" % (target, answer.get("target"), answer.get("target"))
            )

    def current(self):
        """Each app's applied leaf, as ``showmigrations --plan`` shows it, read with the project's settings.

        The first read also takes the steps down to the target and their SQL (one process for the plan).
        """
        first, self._first = self._first, False
        answer = self.helper(steps=first, sql=first)
        self.seen = answer.get("identity")
        if "current" not in answer:  # the migrations or the target cannot be read at all
            self._check(answer, self.p.get("target_revision"))
        self._check_form(answer, self.p.get("target_revision"))
        # A path to the target that cannot be taken is for steps() to say, once the stage has compared
        # the revision with the plan's: a database moved since the plan is refused as such first.
        self._read = answer if first else {}
        return answer["current"]

    def migration_identity(self):
        return self.seen

    def steps(self, current, target, live_schema=None):
        """The migrations ``migrate`` unapplies from ``current`` to ``target``, newest first, classified."""
        if current == target:
            return []
        read = self._read
        if not (read.get("from") == current and read.get("target") == target and "steps" in read):
            read = self.helper(steps=True, sql=True, target=target, **{"from": current})
            self._check(read, target)
        self._read = {}
        if read.get("from") != current:
            raise base.Fail("the revision %s is not one Django's migrations can reach; nothing was changed" % current)
        steps = []
        for s in read.get("steps") or []:
            key = "%s.%s" % (s["app"], s["name"])
            path = s.get("path")
            source = base.read_text(path) if path else None
            if len(s["parents"]) > 1:
                verdict = base.verdict(
                    irreversible=True,
                    runnable=False,
                    reasons=["%s merges %s: roll it back by hand" % (key, ", ".join(s["parents"]))],
                )
            else:
                verdict = classify_step(source, s.get("sql"), s.get("irreversible"), s.get("sql_error"))
            step = {"id": key, "revision": s["before"], "to": s["after"]}
            step["source"] = os.path.relpath(path, self.cwd) if path else key
            step.update(verdict)
            steps.append(step)
        return steps

    def downgrade(self, to, step):
        """``manage.py migrate APP PREVIOUS``: unapplies exactly the step's migration (its dependents in
        the plan came first)."""
        self._read = {}
        app = step["id"].split(".", 1)[0]
        previous = "zero"
        for item in to.split("+"):
            name, _dot, migration = item.partition(".")
            if name == app:
                previous = migration
        args = ["migrate", app, previous, "--no-input"]
        if self.alias != "default":
            args += ["--database", self.alias]
        return self.manage_py(args)


TOOL = Django
