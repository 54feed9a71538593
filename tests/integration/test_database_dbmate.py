"""dbmate migrations rolled back by the database stage (the application's own `dbmate rollback`, one
migration at a time) on the real PostgreSQL server and on SQLite, through the CLI: the plan's
classification, a reversible path, a destructive step refused then approved (with a verified
backup), and an irreversible step (an empty down section) refused whatever the approval."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from conftest import need
from dbkit import drop
from migrate_apps import dbmate_app, stage_cli

pytestmark = pytest.mark.integration

V1, V2, V3, V4 = dbmate_app.VERSIONS  # create_orders, convert_to_cents, add_coupon, index_total
SECRET = "Dbmate-pw-never-on-disk-17"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """One application host, one CLI (its own runs directory) for the module."""
    need(dbmate_app.installed(), "dbmate 2.36 in .cache/migrate-tools (.ci/test-deps)")
    fleet, cli, root = stage_cli.app_host(tmp_path_factory, "dbmate")
    yield fleet, cli, root
    fleet.stop()


@pytest.fixture(params=["postgresql", "sqlite"])
def deployed(request, env, tmp_path):
    """A fresh database of the dialect, with the application deployed on it (all four migrations)."""
    db = stage_cli.new_database(request.param, tmp_path, SECRET)
    app = dbmate_app.copy_app(tmp_path / "release")
    dbmate_app.deploy(app, db.url)
    yield db, app
    drop(db)


def state(db) -> dict:
    """What the database holds, read independently of the product: versions, columns, indexes, rows."""
    eng = db.engine()
    try:
        with eng.connect() as conn:
            insp = sa.inspect(conn)
            return {
                "applied": [
                    r[0] for r in conn.execute(sa.text("SELECT version FROM schema_migrations ORDER BY version"))
                ],
                "columns": sorted(c["name"] for c in insp.get_columns("orders")),
                "indexes": sorted(ix["name"] for ix in insp.get_indexes("orders")),
                "rows": sorted(
                    tuple(str(v) for v in r)
                    for r in conn.execute(sa.text("SELECT * FROM orders ORDER BY id")).fetchall()
                ),
            }
    finally:
        eng.dispose()


def test_dbmate_plan_classifies_then_runs_reversible_and_approved_destructive_steps_and_refuses_irreversible(
    env, deployed, tmp_path
):
    fleet, cli, _root = env
    db, app = deployed
    deployed_state = state(db)
    assert deployed_state["applied"] == [V1, V2, V3, V4]
    assert "ix_orders_total" in deployed_state["indexes"] and "coupon" in deployed_state["columns"]

    # The plan down to the first migration: each step classified; the irreversible one blocks the plan.
    res, _out = stage_cli.plan(cli, fleet, stage_cli.manifest(fleet, tmp_path, "dbmate", app, db, V1))
    assert res.returncode == 3, res.stdout + res.stderr
    run_dir = cli.run_dirs()[-1]
    the_plan = yaml.safe_load((run_dir / "plan.yml").read_text())
    assert the_plan["database"]["current_revision"] == V4
    steps = {s["revision"]: s for s in the_plan["database"]["steps"]}
    assert [(s["revision"], s["to"]) for s in the_plan["database"]["steps"]] == [(V4, V3), (V3, V2), (V2, V1)]
    assert (steps[V4]["destructive"], steps[V4]["irreversible"], steps[V4]["reasons"]) == (False, False, [])
    assert steps[V3]["destructive"] and steps[V3]["reasons"] == ["drops column orders.coupon"]
    assert steps[V2]["irreversible"] and steps[V2]["runnable"] is False
    assert steps[V2]["reasons"] == [
        "the -- migrate:down section is empty: dbmate rollback would only forget the migration"
    ]
    risks = " ".join(the_plan["risks"])
    assert f"{V3} -> {V2} is destructive (drops column orders.coupon)" in risks
    assert f"{V2} -> {V1} is irreversible and cannot run" in risks
    assert any(f"database step {V2} -> {V1} cannot run" in b for b in the_plan["blockers"])  # the gap, named
    res = cli("approve", str(run_dir / "plan.yml"), "--approver", "dba", "--destructive")
    assert res.returncode == 3 and "cannot run" in res.stderr
    assert state(db) == deployed_state  # nothing changed

    # A reversible path (planned, approved and run in one go): the index goes, nothing else.
    res, out = stage_cli.oneshot(cli, fleet, stage_cli.manifest(fleet, tmp_path, "dbmate", app, db, V3))
    assert res.returncode == 0, res.stdout + res.stderr
    assert out["exit_state"] == "completed"
    now = state(db)
    assert now["applied"] == [V1, V2, V3]
    assert "ix_orders_total" not in now["indexes"]
    assert now["columns"] == deployed_state["columns"] and now["rows"] == deployed_state["rows"]
    rep = json.loads((cli.run_dirs()[-1] / "report.json").read_text())["database"]
    assert [(s["revision"], s["to"], s["destructive"]) for s in rep["steps"]] == [(V4, V3, False)]
    assert rep["applied"] == [f"{V4} -> {V3}"]
    assert not (app / "db" / "schema.sql").exists()  # --no-dump-schema: the release is not written to

    # A destructive step: refused without --destructive (nothing changed, no backup), runs with it.
    backups = tmp_path / "backups"
    taken = stage_cli.backups_in(backups)  # the reversible run's backup
    res, out = stage_cli.oneshot(cli, fleet, stage_cli.manifest(fleet, tmp_path, "dbmate", app, db, V2))
    assert res.returncode == 3, res.stdout + res.stderr
    assert out["exit_state"] == "blocked"
    run_dir = cli.run_dirs()[-1]
    assert state(db) == now
    assert stage_cli.backups_in(backups) == taken
    assert cli("approve", str(run_dir / "plan.yml"), "--approver", "dba", "--destructive").returncode == 0
    res = cli("resume", str(run_dir), "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    after = state(db)
    assert after["applied"] == [V1, V2]
    assert "coupon" not in after["columns"]
    assert [r[:3] for r in after["rows"]] == [r[:3] for r in now["rows"]]
    rep = json.loads((run_dir / "report.json").read_text())["database"]
    backup = Path(rep["backup"]["path"])
    assert backup.parent == backups and backup.is_file() and backup not in taken
    assert rep["backup"]["sha256"] == "sha256:" + hashlib.sha256(backup.read_bytes()).hexdigest()
    assert rep["backup"]["revision"] == V3 and rep["backup"]["verified"] is True

    # The password went to dbmate in the environment only: not in any file of the runs.
    stage_cli.assert_secret_nowhere(SECRET, cli.runs)
