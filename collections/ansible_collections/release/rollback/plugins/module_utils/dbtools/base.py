# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one interface every migration tool implements, and what the tools share.

A tool is one file in this package with one ``MigrationTool`` subclass, named in ``registry.py``.
It does only what is particular to the tool: read the current revision, list and classify the down
steps to a target, run one step down, and say when the tool's own table is dirty. Everything else
(the database's identity, the verified backup, the guard, the compare-and-swap against the plan,
the half-applied step, the integrity checks and the record) is done once, in ``db_migrate``, for
every tool.

A *step* is one migration undone, newest first::

    {"id": "0003_drop_note", "revision": "0003_drop_note", "to": "0002_add_note",
     "source": "migrations/0003_drop_note.py",          # where the down code is, for the plan
     "destructive": bool, "irreversible": bool, "runnable": bool, "unclassified": bool,
     "reasons": ["drops column orders.note", ...]}

Build the classification with ``verdict()`` or ``dbmigrate.classify_sql_script()``; it fails
closed: whatever a classifier cannot read is ``unclassified`` (and so needs the same approval as a
destructive step), and a step that cannot run at all (no down code, the tool says irreversible) has
``runnable: False`` and is refused even with an approval.
"""

from __future__ import annotations

import os
import shlex
import sys

try:
    from urllib.parse import quote
except ImportError:  # pragma: no cover
    from urllib import quote  # type: ignore

from ansible_collections.release.rollback.plugins.module_utils import dbmigrate as _db

BASE = "base"


class Fail(Exception):
    """A refusal or failure of the database stage: one sentence in ``msg``; ``extra`` goes in the result."""

    def __init__(self, msg, **extra):
        Exception.__init__(self, msg)
        self.msg = msg
        self.extra = extra


def verdict(destructive=False, irreversible=False, runnable=True, reasons=(), unclassified=False):
    """A step's classification (see the module docstring)."""
    return _db._verdict(destructive, irreversible, runnable, list(reasons), unclassified)


def read_text(path):
    """A file's text, or None when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except (OSError, TypeError, UnicodeDecodeError):
        return None


class MigrationTool:
    """One migration tool, as the application's deploy runs it.

    Class attributes describe it to the manifest, ``db_migrate`` and ``docs/database.md``:
    """

    #: The manifest's ``database.tool``.
    name = None
    #: How its name is written in sentences (e.g. "Alembic").
    title = None
    #: What the tool reads: ``"config"`` (a file, e.g. alembic.ini) or ``"migrations"`` (a directory:
    #: the project or the application's release directory).
    needs = "migrations"
    #: The engines it is tested on (``postgresql``, ``mysql``, ``sqlite``).
    engines = ("postgresql", "mysql", "sqlite")
    #: One line each for the docs' table: how it runs, and what its classifier recognises.
    runs = ""
    recognises = ""
    #: The tool's own settings (the manifest's ``database.settings``): ``{key: one-line description}``;
    #: any other key is refused with a sentence naming these.
    settings_doc = {}
    #: Revisions are numbers (golang-migrate, Rails, dbmate versions): an unquoted YAML number is fine.
    numeric = False
    #: The target is one migration per app (Django): the manifest may give ``{app: migration}``, which
    #: reaches the tool as ``"app.migration+other.migration"`` (sorted by app).
    per_app = False
    #: The revision meaning "nothing applied".
    base = BASE

    @classmethod
    def workdir(cls, params):
        """Where the tool's commands run: the directory of ``config``, or ``migrations``."""
        return os.path.dirname(params["config"]) if cls.needs == "config" else params["migrations"]

    @classmethod
    def settings_problem(cls, settings, where="settings"):
        """One sentence naming the keys of ``settings`` the tool does not take (and the ones it does), or None."""
        unknown = sorted(str(k) for k in settings or {} if k not in cls.settings_doc)
        if not unknown:
            return None
        return "%s %s %s not a setting of tool %s: %s" % (
            where,
            ", ".join(k if len(k) <= 60 else k[:57] + "..." for k in unknown),
            "is" if len(unknown) == 1 else "are",
            cls.name,
            ("use " + ", ".join(sorted(cls.settings_doc))) if cls.settings_doc else "it takes none",
        )

    def __init__(self, module, conn, client):
        self.module = module
        self.p = module.params
        self.conn = conn
        self.client = client  # dbtools.client.Client: the database's own client, as the backup uses
        #: Where the tool's commands run: the directory of ``config``, or ``migrations``.
        self.cwd = self.workdir(self.p)
        #: The manifest's ``database.settings`` for this tool (keys declared in ``settings_doc``).
        self.settings = dict(self.p.get("settings") or {})
        #: Set by ``current()`` when the tool's own table says a step stopped half-way
        #: (e.g. ``{"version": "3"}``); ``require_clean`` refuses then and ``db_migrate`` reports it.
        self.dirty = None

    # -- what every tool implements
    def current(self):
        """The database's revision as the tool reads it (``base`` when nothing is applied)."""
        raise NotImplementedError

    def steps(self, current, target, live_schema=None):
        """The down steps from ``current`` to ``target``, newest first, each classified.

        ``live_schema`` is the database's schema now (``{table: {column: type, "@index name": ...}}``),
        for classifiers that compare with it. Raise ``Fail`` when ``target`` is not below ``current``
        in the tool's history.
        """
        raise NotImplementedError

    def downgrade(self, to, step):
        """Run one step down (``step`` from ``steps``, ending at revision ``to``); ``(rc, out, err)``."""
        raise NotImplementedError

    # -- what a tool may override
    def require_clean(self):
        """Refuse (raise ``Fail``) when the tool's table says a migration stopped half-way."""
        if self.dirty:
            raise Fail(
                "the %s migration table says a migration stopped half-way (%s): inspect and fix the schema "
                "by hand, then clear the mark; nothing was changed" % (self.name, self.dirty),
                record={"dirty": self.dirty},
            )

    def migration_identity(self):
        """The identity of the database the tool itself reaches, when it can tell (else None: it uses
        the URL the backup uses)."""
        return None

    def inspect(self, schema=False, queries=None):
        """The schema and query results, through the same client the backup uses."""
        out = {}
        if schema:
            out["schema"] = self.client.schema()
        if queries:
            out["results"] = self.client.queries(queries)
        return out

    # -- helpers for tools that run the application's own command
    def app_env(self, extra=None):
        """The application's environment: the URL in ``DATABASE_URL`` and in ``url_env``.

        ``PYTHONDONTWRITEBYTECODE``: a Python tool (Alembic, Django) reads the release's own scripts,
        and must not leave ``__pycache__`` directories in a release directory the deploy owns (a dry
        run would otherwise change the host)."""
        env = {"DATABASE_URL": self.p["url"], "PYTHONDONTWRITEBYTECODE": "1"}
        if self.p.get("url_env"):
            env[self.p["url_env"]] = self.p["url"]
        env.update(extra or {})
        return env

    def python(self):
        return self.p.get("python") or sys.executable

    def command(self, argv, env=None, cwd=None):
        """Run the tool's command from the application's directory, with its environment."""
        return self.module.run_command(argv, cwd=cwd or self.cwd, environ_update=self.app_env(env))

    def tail(self, text):
        return self.client.tail(text)

    def find_command(self, name, local):
        """The tool's command: ``settings.command`` when given (a list, or a string split like a shell),
        else the application's own (``local``, a path relative to its directory, e.g.
        ``node_modules/.bin/knex``), else ``name`` on the PATH. Refuses in one sentence when none is there."""
        given = self.settings.get("command")
        if isinstance(given, list):
            return [str(x) for x in given]
        if given:
            return shlex.split(str(given))
        own = os.path.join(self.cwd or "", local)
        if os.path.isfile(own) and os.access(own, os.X_OK):
            return [own]
        found = self.module.get_bin_path(name)
        if found:
            return [found]
        raise Fail(
            "%s is not installed for the application: no %s in %s, no %s on the PATH of the database host, and no "
            "database.settings.command; nothing was changed" % (name, local, self.cwd, name)
        )


def userinfo(conn):
    """The ``user:password@`` part of a URL for ``conn`` (quoted; empty without a user). A URL holding it
    goes to the tool in the environment only, never on a command line."""
    if not conn.get("user"):
        return ""
    auth = quote(conn["user"], safe="")
    if conn.get("password"):
        auth += ":" + quote(conn["password"], safe="")
    return auth + "@"
