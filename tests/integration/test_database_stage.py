"""The database stage against the machine's real PostgreSQL and MariaDB servers and SQLite, driven
through the CLI people use: plan, approve, run, resume. Each test gets its own database."""

from __future__ import annotations

import json
from pathlib import Path

import dbkit
import pytest
import yaml
from dbkit import alembic, restore, write_manifest, write_project

pytestmark = pytest.mark.integration

make_db, app_host = dbkit.make_db, dbkit.app_host  # the shared fixtures

DIALECTS = ["postgresql", "mysql", "sqlite"]
SECRET = "Pw-never-in-logs-7c1e"


def plan(cli, fleet, manifest, *extra):
    res = cli("plan", "-i", str(fleet.inventory), "-m", str(manifest), "--json", *extra)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    return Path(out["run_dir"]), out["plan"]


def run(cli, plan_file, *args):
    res = cli(*args, str(plan_file), "--json")
    data = json.loads(res.stdout) if res.stdout.strip().startswith("{") else {}
    return res, data


def report(run_dir: Path) -> dict:
    return json.loads((run_dir / "report.json").read_text())


@pytest.mark.parametrize("dialect", DIALECTS)
def test_two_step_rollback_lands_at_target_with_previous_schema_and_a_restorable_backup(
    dialect, make_db, app_host, cli, tmp_path
):
    password = SECRET if dialect != "sqlite" else None
    db = make_db(dialect, password)
    config = write_project(tmp_path / "app", "safe")
    alembic(config, db.url, "upgrade", "c3")
    bad_schema = db.schema()
    reference = make_db(dialect)
    alembic(config, reference.url, "upgrade", "a1")
    manifest = write_manifest(tmp_path / "m.yml", app_host, config, db.url, tmp_path / "backups")

    run_dir, the_plan = plan(cli, app_host, manifest, "--scope", "database")
    assert the_plan["database"]["current_revision"] == "c3"
    assert [s["id"] for s in the_plan["database"]["steps"]] == ["c3", "b2"]
    db_step = next(s for s in the_plan["steps"] if s["stage"] == "database")
    assert db_step["down_steps"] == ["c3 -> b2", "b2 -> a1"]
    assert not [r for r in the_plan["risks"] if "destructive" in r or "irreversible" in r]

    assert cli("approve", str(run_dir / "plan.yml"), "--approver", "dba").returncode == 0
    res, out = run(cli, run_dir / "plan.yml", "run")
    assert res.returncode == 0, res.stdout + res.stderr
    assert out["exit_state"] == "completed"

    assert db.revision() == "a1"
    assert db.schema() == reference.schema()  # the previous release's schema, exactly
    assert db.scalar("SELECT COUNT(*) FROM orders") == 2

    rep = report(run_dir)["database"]
    assert rep["applied"] == ["c3 -> b2", "b2 -> a1"]
    assert {c["check"]: c["ok"] for c in rep["integrity"]} == {
        "revision == a1": True,
        "table orders exists": True,
        "orders kept": True,
    }
    backup = rep["backup"]
    assert Path(backup["path"]).parent == tmp_path / "backups"
    assert (Path(backup["path"]).stat().st_mode & 0o077) == 0
    import hashlib

    assert backup["sha256"] == "sha256:" + hashlib.sha256(Path(backup["path"]).read_bytes()).hexdigest()
    md = (run_dir / "report.md").read_text()
    assert backup["sha256"] in md and "restore:" in md

    # The backup is the bad release's database: restored into a scratch database, it compares equal.
    scratch = make_db(dialect)
    restore(dialect, backup["path"], scratch)
    assert scratch.revision() == "c3"
    assert scratch.schema() == bad_schema
    assert scratch.scalar("SELECT COUNT(*) FROM orders") == 2

    if password:
        for f in run_dir.rglob("*"):
            if f.is_file():
                assert SECRET not in f.read_text(errors="replace"), f"the password leaked into {f}"
        assert SECRET not in res.stdout + res.stderr


@pytest.mark.parametrize("dialect", DIALECTS)
def test_destructive_step_is_refused_without_approval_and_runs_with_it(dialect, make_db, app_host, cli, tmp_path):
    db = make_db(dialect)
    config = write_project(tmp_path / "app", "destructive")
    alembic(config, db.url, "upgrade", "c3")
    backups = tmp_path / "backups"
    manifest = write_manifest(tmp_path / "m.yml", app_host, config, db.url, backups)

    run_dir, the_plan = plan(cli, app_host, manifest, "--scope", "database")
    risks = " ".join(the_plan["risks"])
    assert "b2 -> a1 is destructive (drops column orders.coupon)" in risks
    assert "c3 -> b2" not in risks

    assert cli("approve", str(run_dir / "plan.yml"), "--approver", "dba").returncode == 0
    res, out = run(cli, run_dir / "plan.yml", "run")
    # Only the database was in scope and it was not touched: the run is blocked, nothing changed.
    assert res.returncode == 3, res.stdout + res.stderr
    assert out["exit_state"] == "blocked"
    assert out["stages"]["database"] == "blocked"
    # Untouched: still at c3, the column and its data are there, no backup was even taken.
    assert db.revision() == "c3"
    assert db.scalar("SELECT coupon FROM orders WHERE id = 1") == "WELCOME"
    assert not backups.exists() or not list(backups.iterdir())
    rep = report(run_dir)
    # The command to approve the destructive steps, with the plan's real path, ready to paste.
    assert f'release-rollback approve {run_dir / "plan.yml"} --approver "$USER" --destructive' in " ".join(
        rep["next_steps"]
    )

    res = cli("approve", str(run_dir / "plan.yml"), "--approver", "dba", "--destructive")
    assert res.returncode == 0
    approval = json.loads((run_dir / "approval.json").read_text())
    assert approval["destructive"] is True and approval["destructive_steps"] == ["b2"]
    res = cli("resume", str(run_dir), "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    assert db.revision() == "a1"
    assert "coupon" not in {c[0] for c in db.schema()["orders"]["columns"]}
    assert len([p for p in backups.iterdir() if not p.name.startswith(".")]) == 1  # beside the run's record


def test_irreversible_downgrade_is_refused_with_a_clear_reason_even_when_approved(make_db, app_host, cli, tmp_path):
    db = make_db("sqlite")
    config = write_project(tmp_path / "app", "irreversible")
    alembic(config, db.url, "upgrade", "c3")
    manifest = write_manifest(tmp_path / "m.yml", app_host, config, db.url, tmp_path / "backups")

    # Sure to be refused whatever the approval: the plan is blocked before anyone approves it.
    res = cli("plan", "-i", str(app_host.inventory), "-m", str(manifest), "--scope", "database", "--json")
    assert res.returncode == 3, res.stdout + res.stderr
    assert "c3 -> b2 cannot run (downgrade() raises NotImplementedError)" in res.stderr
    run_dir = cli.run_dirs()[-1]
    the_plan = yaml.safe_load((run_dir / "plan.yml").read_text())
    risks = " ".join(the_plan["risks"])
    assert "c3 -> b2 is irreversible and cannot run (downgrade() raises NotImplementedError)" in risks
    assert the_plan["blockers"] == [
        "database step c3 -> b2 cannot run (downgrade() raises NotImplementedError): no approval lets it run. "
        "With a DBA, restore the database from a backup taken before the release or roll the schema forward "
        "with a new migration"
    ]
    assert "plan ready" not in res.stdout + res.stderr
    res = cli("approve", str(run_dir / "plan.yml"), "--approver", "dba", "--destructive")
    assert res.returncode == 3 and "cannot run" in res.stderr
    assert db.revision() == "c3"


@pytest.mark.parametrize("dialect", DIALECTS)
def test_failing_down_step_stops_there_and_reports_the_revision_reached(dialect, make_db, app_host, cli, tmp_path):
    db = make_db(dialect)
    config = write_project(tmp_path / "app", "failing")
    alembic(config, db.url, "upgrade", "c3")
    manifest = write_manifest(tmp_path / "m.yml", app_host, config, db.url, tmp_path / "backups")

    run_dir, _plan = plan(cli, app_host, manifest, "--scope", "database")
    assert cli("approve", str(run_dir / "plan.yml"), "--approver", "dba").returncode == 0
    res, out = run(cli, run_dir / "plan.yml", "run")
    assert res.returncode == 5, res.stdout + res.stderr
    assert out["exit_state"] == "partially completed"

    assert db.revision() == "b2"  # c3 -> b2 ran, b2 -> a1 failed
    rep = report(run_dir)
    dbrep = rep["database"]
    assert dbrep["current"] == "b2"
    assert dbrep["applied"] == ["c3 -> b2"]
    assert dbrep["failed_step"] == "b2 -> a1"
    index_left = "ix_orders_created_at" in {ix[0] for ix in db.schema()["orders"]["indexes"]}
    if dialect == "mysql":
        # MariaDB's DDL is not transactional: the index drop stayed, and the report says so.
        assert not index_left
        assert dbrep["half_applied"]["revision"] == "b2"
        assert dbrep["half_applied"]["changes"] == ["index ix_orders_created_at on orders dropped"]
    elif dialect == "postgresql":
        assert index_left
        assert "half_applied" not in dbrep
    else:
        assert ("half_applied" in dbrep) is (not index_left)
    md = (run_dir / "report.md").read_text()
    assert "failed at step b2 -> a1" in md and "the database is at revision b2" in md
    assert "Database: escalate" in " ".join(rep["next_steps"])


def test_full_rollback_with_a_refused_destructive_step_ends_partially_completed_and_still_validates(
    fleet, make_db, cli, tmp_path
):
    db = make_db("sqlite")
    config = write_project(tmp_path / "app", "destructive")
    alembic(config, db.url, "upgrade", "c3")
    doc = yaml.safe_load(fleet.manifest.read_text())
    doc["rollback_manifest"]["database"].update(
        {"config": str(config), "url": db.url, "backup_dir": str(tmp_path / "backups")}
    )
    fleet.manifest.write_text(yaml.safe_dump(doc))

    res = cli("run", "-i", str(fleet.inventory), "-m", str(fleet.manifest), "--approver", "alice", "--yes", "--json")
    assert res.returncode == 5, res.stdout + res.stderr
    out = json.loads(res.stdout)
    assert out["exit_state"] == "partially completed"
    assert out["stages"] == {
        "assess": "ok",
        "feature_flags": "ok",
        "code_config": "ok",
        "database": "blocked",
        "infrastructure": "ok",
        "validate": "ok",
        "report": "ok",
    }
    assert db.revision() == "c3"
    assert all(fleet.live(h) == f"./releases/{fleet.good}" for h in fleet.hosts)
    assert fleet.lb_release() == fleet.good
    assert any("drops column orders.coupon" in x for x in out["known_limitations"])


def test_ansible_playbook_runs_a_destructive_step_only_with_rollback_approve_destructive(make_db, app_host, tmp_path):
    import os
    import subprocess

    db = make_db("sqlite")
    config = write_project(tmp_path / "app", "destructive")
    alembic(config, db.url, "upgrade", "c3")
    manifest = write_manifest(tmp_path / "m.yml", app_host, config, db.url, tmp_path / "backups")
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, ANSIBLE_CONFIG=str(root / "ansible.cfg"))
    cmd = [
        "ansible-playbook",
        "-i",
        str(app_host.inventory),
        str(root / "playbooks" / "rollback.yml"),
        "-e",
        f"@{manifest}",
        "-e",
        '{"rollback_scope": ["database"]}',
        "-e",
        "rollback_approved_by=alice",
    ]
    refused = subprocess.run(
        [*cmd, "-e", f"rollback_run_dir={tmp_path / 'run1'}"], cwd=root, env=env, capture_output=True, text=True
    )
    assert refused.returncode != 0
    assert db.revision() == "c3"
    rep = json.loads((tmp_path / "run1" / "report.json").read_text())
    assert next(s for s in rep["steps"] if s["stage"] == "database")["status"] == "blocked"

    done = subprocess.run(
        [*cmd, "-e", f"rollback_run_dir={tmp_path / 'run2'}", "-e", "rollback_approve_destructive=true"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert db.revision() == "a1"
    rep = json.loads((tmp_path / "run2" / "report.json").read_text())
    assert rep["approval"]["destructive_steps"] == ["b2"]
    assert rep["database"]["applied"] == ["c3 -> b2", "b2 -> a1"]
