"""Rails ActiveRecord migrations rolled back by the database stage (the application's own
`bin/rails db:migrate:down VERSION=`, one version at a time) on the real PostgreSQL and MariaDB
servers, through the CLI: the plan's classification, a reversible path, a destructive step refused
then approved (with a verified backup), an irreversible step refused whatever the approval, and an
application whose config/database.yml reaches another database than the manifest's."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from conftest import need
from dbkit import PG_ADMIN, create, drop, server_up
from migrate_apps import rails_app, stage_cli

pytestmark = pytest.mark.integration

V1, V2, V3, V4 = rails_app.VERSIONS  # create_orders, convert_totals_to_cents, add_coupon, add_index
SECRET = "Rails-pw-never-on-disk-7c"  # the database's own login: it reaches Rails only in DATABASE_URL


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """One application host, one CLI (its own runs directory) for the module."""
    need(rails_app.installed(), "Rails 6.1 from Debian (ruby-railties, ruby-activerecord, ruby-pg, ruby-mysql2)")
    fleet, cli, root = stage_cli.app_host(tmp_path_factory, "rails")
    yield fleet, cli, root
    fleet.stop()


@pytest.fixture(params=["postgresql", "mysql"])
def deployed(request, env, tmp_path):
    """A fresh database of the dialect, with the application deployed on it (all four migrations)."""
    db = stage_cli.new_database(request.param, tmp_path, SECRET)
    app = rails_app.copy_app(tmp_path / "release")
    rails_app.deploy(app, db.url)
    yield db, app
    drop(db)


def manifest(fleet, tmp_path: Path, app: Path, db, version: str) -> Path:
    """The manifest down to ``version``, with a backup directory of its own per target."""
    return stage_cli.manifest(fleet, tmp_path, "rails", app, db, version, tmp_path / f"backups-{version}")


def state(db) -> dict:
    """What the database holds, read with our own queries: applied versions, columns, indexes, rows."""
    if db.dialect == "postgresql":
        cols = "SELECT column_name FROM information_schema.columns WHERE table_name = 'orders'"
        idx = "SELECT indexname FROM pg_indexes WHERE tablename = 'orders'"
    else:
        where = f"table_schema = '{db.name}' AND table_name = 'orders'"
        cols = f"SELECT column_name FROM information_schema.columns WHERE {where}"
        idx = f"SELECT DISTINCT index_name FROM information_schema.statistics WHERE {where}"
    eng = db.engine()
    try:
        with eng.connect() as conn:
            return {
                "applied": sorted(r[0] for r in conn.execute(sa.text("SELECT version FROM schema_migrations"))),
                "columns": sorted(r[0] for r in conn.execute(sa.text(cols))),
                "indexes": sorted(r[0] for r in conn.execute(sa.text(idx))),
                "rows": sorted(
                    tuple(str(v) for v in r) for r in conn.execute(sa.text("SELECT * FROM orders ORDER BY id"))
                ),
            }
    finally:
        eng.dispose()


def test_rails_plan_classifies_then_runs_reversible_and_approved_destructive_steps_and_refuses_irreversible(
    env, deployed, tmp_path
):
    fleet, cli, root = env
    db, app = deployed
    deployed_state = state(db)
    assert deployed_state["applied"] == [V1, V2, V3, V4]
    assert rails_app.INDEX in deployed_state["indexes"] and "coupon" in deployed_state["columns"]
    assert deployed_state["rows"] == [("1", "1200", "2026-11-20", "WELCOME"), ("2", "900", "2026-11-21", "None")]

    # The plan down to the first migration: each step classified from its Ruby; the irreversible one
    # blocks the plan, and no approval lets it run.
    res, out = stage_cli.plan(cli, fleet, manifest(fleet, tmp_path, app, db, V1))
    assert res.returncode == 3, res.stdout + res.stderr
    run_dir = cli.run_dirs()[-1] if cli.run_dirs() else Path(out["run_dir"])
    the_plan = yaml.safe_load((run_dir / "plan.yml").read_text())
    assert the_plan["database"]["current_revision"] == V4
    steps = {s["revision"]: s for s in the_plan["database"]["steps"]}
    assert [(s["revision"], s["to"]) for s in the_plan["database"]["steps"]] == [(V4, V3), (V3, V2), (V2, V1)]
    assert (steps[V4]["destructive"], steps[V4]["irreversible"], steps[V4]["reasons"]) == (False, False, [])
    assert steps[V4]["source"] == f"db/migrate/{V4}_add_index_on_orders_placed_on.rb"
    assert steps[V3]["destructive"] and steps[V3]["reasons"] == ["drops column orders.coupon"]
    assert steps[V2]["irreversible"] and steps[V2]["runnable"] is False
    assert steps[V2]["reasons"] == [
        "down raises ActiveRecord::IrreversibleMigration (the totals were converted to cents; the old amounts are gone)"
    ]
    risks = " ".join(the_plan["risks"])
    assert f"{V3} -> {V2} is destructive (drops column orders.coupon)" in risks
    assert f"{V2} -> {V1} is irreversible and cannot run" in risks
    assert any(f"database step {V2} -> {V1} cannot run" in b for b in the_plan["blockers"])  # the gap, named
    res = cli("approve", str(run_dir / "plan.yml"), "--approver", "dba", "--destructive")
    assert res.returncode == 3 and "cannot run" in res.stderr
    assert state(db) == deployed_state  # nothing changed

    # A reversible path: the index goes, nothing else.
    res, out = stage_cli.plan(cli, fleet, manifest(fleet, tmp_path, app, db, V3))
    assert res.returncode == 0, res.stdout + res.stderr
    run_dir = Path(out["run_dir"])
    assert [(s["revision"], s["to"]) for s in out["plan"]["database"]["steps"]] == [(V4, V3)]
    assert cli("approve", str(run_dir / "plan.yml"), "--approver", "dba").returncode == 0
    res = cli("run", str(run_dir / "plan.yml"), "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    now = state(db)
    assert now["applied"] == [V1, V2, V3]
    assert rails_app.INDEX not in now["indexes"]
    assert now["columns"] == deployed_state["columns"] and now["rows"] == deployed_state["rows"]
    rep = json.loads((run_dir / "report.json").read_text())["database"]
    assert rep["applied"] == [f"{V4} -> {V3}"] and rep["current"] == V3
    assert not (app / "db" / "schema.rb").exists()  # the release's files are not rewritten

    # A destructive step: refused without --destructive (nothing changed, no backup), runs with it.
    backups = tmp_path / f"backups-{V2}"
    res, out = stage_cli.plan(cli, fleet, manifest(fleet, tmp_path, app, db, V2))
    assert res.returncode == 0, res.stdout + res.stderr
    run_dir = Path(out["run_dir"])
    assert cli("approve", str(run_dir / "plan.yml"), "--approver", "dba").returncode == 0
    res = cli("run", str(run_dir / "plan.yml"), "--json")
    assert res.returncode == 3, res.stdout + res.stderr
    assert json.loads(res.stdout)["exit_state"] == "blocked"
    assert state(db) == now
    assert not backups.exists() or not [p for p in backups.iterdir() if not p.name.startswith(".")]
    assert cli("approve", str(run_dir / "plan.yml"), "--approver", "dba", "--destructive").returncode == 0
    res = cli("resume", str(run_dir), "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    after = state(db)
    assert after["applied"] == [V1, V2]
    assert "coupon" not in after["columns"]
    assert after["rows"] == [r[:3] for r in now["rows"]]
    rep = json.loads((run_dir / "report.json").read_text())["database"]
    backup = Path(rep["backup"]["path"])
    assert backup.parent == backups and backup.is_file()
    assert rep["backup"]["sha256"] == "sha256:" + hashlib.sha256(backup.read_bytes()).hexdigest()
    assert rep["backup"]["revision"] == V3 and rep["backup"]["verified"] is True
    assert rep["identity"]["database"] == db.name
    assert b"WELCOME" in backup.read_bytes() or db.dialect == "postgresql"  # the lost value is in the dump

    # The password reached Rails in its environment only: not in the runs, the reports or the release.
    stage_cli.assert_secret_nowhere(SECRET, root / "runs", app)


def test_an_application_whose_database_yml_reaches_another_database_is_refused_with_both_named(env, tmp_path):
    """config/database.yml's `url:` wins over DATABASE_URL in Rails: the tool asks the application
    (`bin/rails runner`) which database it reaches, and refuses when it is not the manifest's."""
    fleet, cli, _root = env
    need(server_up(PG_ADMIN), "the postgresql server on 127.0.0.1")
    db = create("postgresql", tmp_path)
    try:
        app = rails_app.copy_app(tmp_path / "release")  # not deployed: the check comes before anything else
        other = tmp_path / "other.sqlite3"
        (app / "config" / "database.yml").write_text(f"production:\n  url: sqlite3:{other}\n")
        res, _out = stage_cli.plan(cli, fleet, manifest(fleet, tmp_path, app, db, V3))
        assert res.returncode == 3, res.stdout + res.stderr
        said = res.stdout + res.stderr
        assert "the migration tool (rails) would reach SQLite file" in said, said
        assert f"PostgreSQL database {db.name}" in said
        assert not other.exists()  # not created by the check
    finally:
        drop(db)
