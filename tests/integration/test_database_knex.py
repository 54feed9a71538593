"""Knex migrations rolled back by the database stage (the application's own `knex migrate:down`, one
migration at a time) on the real PostgreSQL and MariaDB servers, through the CLI: the plan's
classification, a reversible path, a destructive step refused then approved (with a verified
backup), an irreversible step refused whatever the approval, and a held knex_migrations_lock."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from conftest import need
from dbkit import drop
from migrate_apps import knex_app, stage_cli

pytestmark = pytest.mark.integration

M1, M2, M3, M4 = knex_app.MIGRATIONS  # create_orders, convert_to_cents, add_coupon, index_total
SECRET = "Knex-pw-never-on-disk-41"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """One application host, one CLI (its own runs directory) for the module."""
    need(knex_app.installed(), "knex 3.1 with pg and mysql2 in .cache/migrate-tools (.ci/test-deps)")
    fleet, cli, root = stage_cli.app_host(tmp_path_factory, "knex")
    yield fleet, cli, root
    fleet.stop()


@pytest.fixture(params=["postgresql", "mysql"])
def deployed(request, env, tmp_path):
    """A fresh database of the dialect, with the application deployed on it (all four migrations)."""
    db = stage_cli.new_database(request.param, tmp_path, SECRET)
    app = knex_app.copy_app(tmp_path / "release")
    knex_app.deploy(app, db.url)
    yield db, app
    drop(db)


def state(db) -> dict:
    """What the database holds, read with our own queries: applied migrations, lock, columns, indexes, rows."""
    if db.dialect == "postgresql":
        cols = "SELECT column_name FROM information_schema.columns WHERE table_name = 'orders'"
        idx = "SELECT indexname FROM pg_indexes WHERE tablename = 'orders'"
    else:
        where = f"WHERE table_schema = '{db.name}' AND table_name = 'orders'"
        cols = f"SELECT column_name FROM information_schema.columns {where}"
        idx = f"SELECT DISTINCT index_name FROM information_schema.statistics {where}"
    eng = db.engine()
    try:
        with eng.connect() as conn:
            columns = sorted(r[0] for r in conn.execute(sa.text(cols)))
            return {
                "applied": [r[0] for r in conn.execute(sa.text("SELECT name FROM knex_migrations ORDER BY id"))],
                "locked": conn.execute(sa.text("SELECT MAX(is_locked) FROM knex_migrations_lock")).scalar(),
                "columns": columns,
                "indexes": sorted(r[0] for r in conn.execute(sa.text(idx))),
                "rows": sorted(
                    tuple(str(v) for v in r)
                    for r in conn.execute(sa.text("SELECT * FROM orders ORDER BY id")).fetchall()
                ),
            }
    finally:
        eng.dispose()


def test_knex_plan_classifies_then_runs_reversible_and_approved_destructive_steps_and_refuses_irreversible(
    env, deployed, tmp_path
):
    fleet, cli, _root = env
    db, app = deployed
    deployed_state = state(db)
    assert deployed_state["applied"] == [M1, M2, M3, M4]
    assert "ix_orders_total" in deployed_state["indexes"] and "coupon" in deployed_state["columns"]

    # The plan down to the first migration: each step classified; the irreversible one blocks the plan.
    res, out = stage_cli.plan(cli, fleet, stage_cli.manifest(fleet, tmp_path, "knex", app, db, M1))
    assert res.returncode == 3, res.stdout + res.stderr
    run_dir = cli.run_dirs()[-1]
    the_plan = yaml.safe_load((run_dir / "plan.yml").read_text())
    steps = {s["revision"]: s for s in the_plan["database"]["steps"]}
    assert [s["revision"] for s in the_plan["database"]["steps"]] == [M4, M3, M2]
    assert (steps[M4]["destructive"], steps[M4]["irreversible"], steps[M4]["reasons"]) == (False, False, [])
    assert steps[M3]["destructive"] and steps[M3]["reasons"] == ["drops column orders.coupon"]
    assert steps[M2]["irreversible"] and steps[M2]["runnable"] is False
    assert steps[M2]["reasons"] == ["down() throws (amounts were converted to cents; there is no way back)"]
    risks = " ".join(the_plan["risks"])
    assert f"{M3} -> {M2} is destructive (drops column orders.coupon)" in risks
    assert f"{M2} -> {M1} is irreversible and cannot run" in risks
    assert any(f"database step {M2} -> {M1} cannot run" in b for b in the_plan["blockers"])  # the gap, named
    res = cli("approve", str(run_dir / "plan.yml"), "--approver", "dba", "--destructive")
    assert res.returncode == 3 and "cannot run" in res.stderr
    assert state(db) == deployed_state  # nothing changed

    # A reversible path (planned, approved and run in one go): the index goes, nothing else.
    res, out = stage_cli.oneshot(cli, fleet, stage_cli.manifest(fleet, tmp_path, "knex", app, db, M3))
    assert res.returncode == 0, res.stdout + res.stderr
    assert out["exit_state"] == "completed"
    now = state(db)
    assert now["applied"] == [M1, M2, M3]
    assert "ix_orders_total" not in now["indexes"]
    assert now["columns"] == deployed_state["columns"] and now["rows"] == deployed_state["rows"]
    rep = json.loads((cli.run_dirs()[-1] / "report.json").read_text())["database"]
    assert [(s["revision"], s["to"], s["destructive"]) for s in rep["steps"]] == [(M4, M3, False)]
    assert rep["applied"] == [f"{M4} -> {M3}"]

    # A destructive step: refused without --destructive (nothing changed, no backup), runs with it.
    backups = tmp_path / "backups"
    taken = stage_cli.backups_in(backups)  # the reversible run's backup
    res, out = stage_cli.oneshot(cli, fleet, stage_cli.manifest(fleet, tmp_path, "knex", app, db, M2))
    assert res.returncode == 3, res.stdout + res.stderr
    assert out["exit_state"] == "blocked"
    run_dir = cli.run_dirs()[-1]
    assert state(db) == now
    assert stage_cli.backups_in(backups) == taken
    assert cli("approve", str(run_dir / "plan.yml"), "--approver", "dba", "--destructive").returncode == 0
    res = cli("resume", str(run_dir), "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    after = state(db)
    assert after["applied"] == [M1, M2]
    assert "coupon" not in after["columns"] and after["locked"] == 0
    assert [r[:3] for r in after["rows"]] == [r[:3] for r in now["rows"]]
    rep = json.loads((run_dir / "report.json").read_text())["database"]
    backup = Path(rep["backup"]["path"])
    assert backup.parent == backups and backup.is_file() and backup not in taken
    assert rep["backup"]["sha256"] == "sha256:" + hashlib.sha256(backup.read_bytes()).hexdigest()
    assert rep["backup"]["revision"] == M3 and rep["backup"]["verified"] is True
    assert rep["identity"]["database"] == db.name

    # A held knex_migrations_lock (a knex killed mid-migration): refused, nothing changed.
    if db.dialect == "postgresql":  # the same query on MariaDB: one dialect is enough (time)
        eng = db.engine()
        with eng.begin() as conn:
            conn.execute(sa.text("UPDATE knex_migrations_lock SET is_locked = 1"))
        eng.dispose()
        res, _out = stage_cli.plan(cli, fleet, stage_cli.manifest(fleet, tmp_path, "knex", app, db, M1))
        assert res.returncode == 3, res.stdout + res.stderr
        assert "knex_migrations_lock is held" in res.stdout + res.stderr
        assert state(db)["applied"] == [M1, M2]

    # The password went to knex in the environment only: not in any file of the runs.
    stage_cli.assert_secret_nowhere(SECRET, cli.runs)
