"""Adding a migration tool is one file in the registry: a tool written by this test, in a copy of
the product, appears in `release-rollback plan` with its steps classified and runs through the
shared guard, backup and checks, with nothing else changed but its name in the registry's import."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT

pytestmark = pytest.mark.integration

FAKE_TOOL = '''
from __future__ import annotations

from ansible_collections.release.rollback.plugins.module_utils.dbtools import base


class Counter(base.MigrationTool):
    """A counter in table counter_version; migration N's down script is N.down (SQL)."""

    name = "counter"
    numeric = True
    runs = "the SQL in `N.down`, by the module's own client"
    recognises = "the SQL classifier on `N.down`"
    settings_doc = {"note": "a word the plan shows"}

    def current(self):
        rows = self.client.rows("SELECT v FROM counter_version")
        return str(rows[0][0]) if rows else base.BASE

    def steps(self, current, target, live_schema=None):
        out = []
        for n in range(int(current), int(target), -1):
            text = base.read_text("%s/%d.down" % (self.cwd, n))
            step = {"id": str(n), "revision": str(n), "to": str(n - 1), "source": "%d.down" % n}
            step.update(_db.classify_sql_script(text))
            step["reasons"] = step["reasons"] + ["note: %s" % self.settings.get("note")]
            out.append(step)
        return out

    def downgrade(self, to, step):
        body = base.read_text("%s/%s.down" % (self.cwd, step["revision"]))
        return self.client.script(body + ";\\nUPDATE counter_version SET v = %d;" % int(to))


TOOL = Counter
'''


@pytest.fixture
def product_with_a_new_tool(tmp_path):
    """A copy of the product with one more file in dbtools/ and its name in the registry's import."""
    copy = tmp_path / "product"
    for part in ("driver", "collections", "playbooks", "inventories"):
        shutil.copytree(ROOT / part, copy / part, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dbtools = copy / "collections/ansible_collections/release/rollback/plugins/module_utils/dbtools"
    (dbtools / "counter.py").write_text(
        FAKE_TOOL.replace(
            "from ansible_collections.release.rollback.plugins.module_utils.dbtools import base",
            "from ansible_collections.release.rollback.plugins.module_utils import dbmigrate as _db\n"
            "from ansible_collections.release.rollback.plugins.module_utils.dbtools import base",
        )
    )
    registry = (dbtools / "registry.py").read_text()
    registry, n = re.subn(r"(import \(  # one name per tool file\n)", r"\1    counter,\n", registry)
    assert n == 1
    registry, n = re.subn(r"for _file in \(", "for _file in (counter, ", registry)
    assert n == 1
    (dbtools / "registry.py").write_text(registry)
    return copy


def test_a_tool_added_as_one_file_is_planned_and_run_through_the_shared_stage(product_with_a_new_tool, tmp_path):
    from release_rollback.demo import build_fleet

    fleet = build_fleet(tmp_path / "fleet", 1, start=False)
    migrations = tmp_path / "counter"
    migrations.mkdir()
    (migrations / "3.down").write_text("DROP TABLE notes")
    (migrations / "2.down").write_text("CREATE TABLE kept2 (id INTEGER)")
    db = tmp_path / "app.db"
    with sqlite3.connect(db) as conn:
        conn.executescript("CREATE TABLE counter_version (v INTEGER); INSERT INTO counter_version VALUES (3);")
        conn.executescript("CREATE TABLE notes (id INTEGER); CREATE TABLE orders (id INTEGER);")
    manifest = tmp_path / "m.yml"
    database = {
        "tool": "counter",
        "migrations": str(migrations),
        "url": f"sqlite:///{db}",
        "target_revision": 1,
        "settings": {"note": "hello"},
        "backup_dir": str(tmp_path / "backups"),
        "critical_tables": ["orders"],
    }
    manifest.write_text(yaml.safe_dump({"rollback_manifest": {"version": fleet.bad, "database": database}}))
    env = dict(os.environ, PYTHONPATH=str(product_with_a_new_tool / "driver"))
    runs = tmp_path / "runs"

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "release_rollback.cli", "--runs-dir", str(runs), *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=300,
        )

    res = cli("plan", "-i", str(fleet.inventory), "-m", str(manifest), "--scope", "database", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    out = json.loads(res.stdout)
    steps = out["plan"]["database"]["steps"]
    assert [(s["revision"], s["to"], s["destructive"]) for s in steps] == [("3", "2", True), ("2", "1", False)]
    assert "note: hello" in steps[0]["reasons"] and any("notes" in r for r in steps[0]["reasons"])

    res = cli("approve", out["run_dir"], "--approver", "dba", "--destructive")
    assert res.returncode == 0, res.stdout + res.stderr
    res = cli("run", out["run_dir"])
    assert res.returncode == 0, res.stdout + res.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT v FROM counter_version").fetchone() == (1,)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "notes" not in tables and "kept2" in tables
    backups = list((tmp_path / "backups").glob("*.sqlite3"))
    assert len(backups) == 1
    with sqlite3.connect(backups[0]) as copy:
        assert copy.execute("SELECT v FROM counter_version").fetchone() == (3,)
