# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Alembic, run as the application runs it: its Python, its alembic.ini and its env.py."""

from __future__ import annotations

import json

from ansible_collections.release.rollback.plugins.module_utils import dbmigrate as _db
from ansible_collections.release.rollback.plugins.module_utils.dbtools import base


class Alembic(base.MigrationTool):
    """The application's Alembic, run with its Python, its alembic.ini and its env.py."""

    name = "alembic"
    title = "Alembic"
    needs = "config"
    runs = (
        "`alembic downgrade` one revision at a time, with the application's Python (`python:`), its "
        "`alembic.ini` (`config:`) and `env.py`; the URL in `DATABASE_URL` and `url_env`"
    )
    recognises = (
        "the `downgrade()` source: `op.drop_table`, `op.drop_column`, `op.execute` SQL (the SQL classifier), "
        "type narrowing against the live schema, data calls; an empty `downgrade()` or a `raise` is irreversible"
    )

    def __init__(self, module, conn, client):
        base.MigrationTool.__init__(self, module, conn, client)
        self.seen = None
        # What the last current() read besides the revision (schema, identity, steps down to the target);
        # inspect() and steps() each take their part once, and a downgrade empties it.
        self._read = {}

    def run(self, args):
        cmd = [self.python(), "-m", "alembic", "-c", self.p["config"]] + args
        return self.module.run_command(cmd, cwd=self.cwd, environ_update=self.app_env())

    def helper(self, **request):
        request.setdefault("config", self.p["config"])
        request["identity_sql"] = _db.IDENTITY_SQL
        rc, out, err = self.module.run_command(
            [self.python(), "-c", _db.HELPER],
            cwd=self.cwd,
            environ_update=self.app_env(),
            data=json.dumps(request),
        )
        what = "the migration tool (Alembic's env.py)" if request.get("env") else "the database"
        if rc != 0:
            why = self.client.tail(err or out)
            raise base.Fail("reading %s failed: %s" % (what, why), detail=why)
        try:
            answer = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            why = self.client.tail(err or out)
            raise base.Fail("reading %s gave no answer: %s" % (what, why), detail=why) from None
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
            raise base.Fail("Alembic's env.py cannot be checked: %s" % env["error"])
        self.seen = env.get("identity")
        heads = env.get("heads") or []
        if len(heads) > 1:
            raise base.Fail("the database has several heads (%s): merge or pick one" % ", ".join(heads))
        return heads[0] if heads else base.BASE

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
            raise base.Fail(
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
                to = rev["down"] or base.BASE
            step = {"id": rev["revision"], "revision": rev["revision"], "to": to}
            step.update(verdict)
            steps.append(step)
        return steps

    def downgrade(self, to, step=None):
        self._read = {}
        return self.run(["downgrade", to])


TOOL = Alembic
