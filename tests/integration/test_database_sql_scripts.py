"""SQL down-scripts in the golang-migrate convention (NNN_name.up.sql / .down.sql, schema_migrations
(version, dirty)), run by the collection itself, on the real PostgreSQL and MariaDB servers and SQLite."""

from __future__ import annotations

import json
from pathlib import Path

import dbkit
import pytest
import sqlalchemy as sa
import yaml
from dbkit import (
    migrate_up,
    migration_state,
    restore,
    write_sql_project,
)

pytestmark = pytest.mark.integration

make_db, app_host = dbkit.make_db, dbkit.app_host  # the shared fixtures

DIALECTS = ["postgresql", "mysql", "sqlite"]
SECRET = "Sql-pw-never-logged-41d9"


def plain_url(db) -> str:
    """The URL as an operator writes it for the sql tool (no SQLAlchemy driver suffix needed)."""
    return db.url.replace("+psycopg", "").replace("+pymysql", "")


def manifest(tmp_path: Path, fleet, migrations: Path, db, target: str = "1") -> Path:
    doc = {
        "rollback_manifest": {
            "app": "shop",
            "version": fleet.bad,
            "database": {
                "tool": "sql",
                "migrations": str(migrations),
                "url": plain_url(db),
                "target_revision": target,
                "backup_dir": str(tmp_path / "backups"),
                "critical_tables": ["orders"],
                "assertions": [{"name": "orders kept", "sql": "SELECT COUNT(*) FROM orders", "expect": 2}],
            },
        }
    }
    path = tmp_path / "m.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


def plan_approve_run(cli, fleet, manifest_file, *approve):
    res = cli("plan", "-i", str(fleet.inventory), "-m", str(manifest_file), "--scope", "database", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    out = json.loads(res.stdout)
    run_dir = Path(out["run_dir"])
    assert cli("approve", str(run_dir / "plan.yml"), "--approver", "dba", *approve).returncode == 0
    res = cli("run", str(run_dir / "plan.yml"), "--json")
    return out["plan"], run_dir, res


@pytest.mark.parametrize("dialect", DIALECTS)
def test_sql_down_scripts_roll_back_two_versions_to_the_previous_schema(dialect, make_db, app_host, cli, tmp_path):
    db = make_db(dialect, SECRET if dialect != "sqlite" else None)
    migrations = write_sql_project(tmp_path / "migrations", "safe", dialect)
    migrate_up(db, migrations, 3)
    bad_schema = db.schema()
    reference = make_db(dialect)
    migrate_up(reference, migrations, 1)

    plan, run_dir, res = plan_approve_run(cli, app_host, manifest(tmp_path, app_host, migrations, db))
    assert plan["database"]["current_revision"] == "3"
    assert [(s["revision"], s["to"]) for s in plan["database"]["steps"]] == [("3", "2"), ("2", "1")]
    assert res.returncode == 0, res.stdout + res.stderr

    assert migration_state(db) == (1, False)
    assert db.schema() == reference.schema()
    rep = json.loads((run_dir / "report.json").read_text())["database"]
    assert all(c["ok"] for c in rep["integrity"]) and len(rep["integrity"]) == 3
    scratch = make_db(dialect)
    restore(dialect, rep["backup"]["path"], scratch)
    assert scratch.schema() == bad_schema
    assert migration_state(scratch) == (3, False)
    if dialect != "sqlite":  # psql and mariadb got the password from the environment, and nothing kept it
        for f in run_dir.rglob("*"):
            if f.is_file():
                assert SECRET not in f.read_text(errors="replace"), f"the password leaked into {f}"
        assert SECRET not in res.stdout + res.stderr


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_failing_down_script_stops_there_and_the_state_is_reported_exactly(dialect, make_db, app_host, cli, tmp_path):
    db = make_db(dialect)
    migrations = write_sql_project(tmp_path / "migrations", "failing", dialect)
    migrate_up(db, migrations, 3)

    _plan, run_dir, res = plan_approve_run(cli, app_host, manifest(tmp_path, app_host, migrations, db))
    assert res.returncode == 5, res.stdout + res.stderr
    rep = json.loads((run_dir / "report.json").read_text())["database"]
    assert rep["applied"] == ["3 -> 2"]
    assert rep["failed_step"] == "2 -> 1"
    indexes = {ix[0] for ix in db.schema()["orders"]["indexes"]}
    if dialect == "mysql":
        # No transactional DDL: golang-migrate's dirty flag is left set and the half-applied part named.
        assert migration_state(db) == (1, True)
        assert rep["dirty"] == {"version": "1"}
        assert rep["half_applied"]["changes"] == ["index ix_orders_created_at on orders dropped"]
        assert "ix_orders_created_at" not in indexes
        # The next plan is blocked: a dirty database is never rolled over.
        res = cli("plan", "-i", str(app_host.inventory), "-m", str(tmp_path / "m.yml"), "--scope", "database")
        assert res.returncode == 3
        assert "schema_migrations is dirty at version 1" in res.stderr
    else:
        # The step ran in one transaction: rolled back whole, clean at version 2.
        assert migration_state(db) == (2, False)
        assert rep["current"] == "2"
        assert "dirty" not in rep and "half_applied" not in rep
        assert "ix_orders_created_at" in indexes


def test_missing_and_destructive_down_scripts_are_guarded(make_db, app_host, cli, tmp_path):
    db = make_db("sqlite")
    migrations = write_sql_project(tmp_path / "migrations", "guarded", "sqlite")
    migrate_up(db, migrations, 3)

    # A step that cannot run whatever the approval blocks the plan itself, before anyone approves it.
    res = cli("plan", "-i", str(app_host.inventory), "-m", str(manifest(tmp_path, app_host, migrations, db)), "--json")
    assert res.returncode == 3, res.stdout + res.stderr
    assert "3 -> 2 cannot run (there is no down script)" in res.stderr
    plan = yaml.safe_load((cli.run_dirs()[-1] / "plan.yml").read_text())
    risks = " ".join(plan["risks"])
    assert "3 -> 2 is irreversible and cannot run (there is no down script)" in risks
    assert "2 -> 1 is destructive (drops column orders.coupon)" in risks
    assert any("3 -> 2 cannot run (there is no down script): no approval lets it run" in b for b in plan["blockers"])
    assert migration_state(db) == (3, False)

    # Going back one version only: the missing script is out of the way; the destructive one is
    # refused without --destructive and runs with it.
    migrations_2 = tmp_path / "m2"
    write_sql_project(migrations_2, "guarded", "sqlite")
    (migrations_2 / "003_third.up.sql").unlink()
    eng = sa.create_engine(db.url)
    with eng.begin() as conn:
        conn.execute(sa.text("DROP INDEX ix_orders_total"))
        conn.execute(sa.text("UPDATE schema_migrations SET version = 2"))
    eng.dispose()
    _plan, _run_dir, res = plan_approve_run(cli, app_host, manifest(tmp_path, app_host, migrations_2, db))
    assert res.returncode == 3 and migration_state(db) == (2, False)
    _plan, _run_dir, res = plan_approve_run(
        cli, app_host, manifest(tmp_path, app_host, migrations_2, db), "--destructive"
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert migration_state(db) == (1, False)
    assert "coupon" not in {c[0] for c in db.schema()["orders"]["columns"]}


def test_a_dirty_database_blocks_the_plan(make_db, app_host, cli, tmp_path):
    db = make_db("sqlite")
    migrations = write_sql_project(tmp_path / "migrations", "safe", "sqlite")
    migrate_up(db, migrations, 3)
    eng = sa.create_engine(db.url)
    with eng.begin() as conn:
        conn.execute(sa.text("UPDATE schema_migrations SET dirty = 1"))
    eng.dispose()
    res = cli("plan", "-i", str(app_host.inventory), "-m", str(manifest(tmp_path, app_host, migrations, db)))
    assert res.returncode == 3
    assert "schema_migrations is dirty at version 3" in res.stderr
    assert migration_state(db) == (3, True)
