"""sqitch projects reverted by the database stage (sqitch itself, one change at a time) on the real
PostgreSQL and MariaDB servers and SQLite."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from dbkit import (
    MARIADB_ADMIN,
    PG_ADMIN,
    create,
    drop,
    drop_sqitch_registry,
    server_up,
    sqitch_deploy,
    sqitch_deployed,
    sqitch_registry,
    write_sqitch_project,
)

pytestmark = pytest.mark.integration

DIALECTS = ["postgresql", "mysql", "sqlite"]


@pytest.fixture
def make_db(tmp_path, need):
    made = []

    def make(dialect: str):
        need(shutil.which("sqitch") is not None, "sqitch (Debian packages sqitch, libdbd-pg-perl, libdbd-mariadb-perl)")
        if dialect == "postgresql":
            need(server_up(PG_ADMIN), "PostgreSQL on 127.0.0.1:5432 (psycopg installed)")
        if dialect == "mysql":
            need(server_up(MARIADB_ADMIN), "MariaDB on 127.0.0.1:3306 (PyMySQL installed)")
        db = create(dialect, tmp_path)
        made.append(db)
        return db

    yield make
    for db in made:
        drop_sqitch_registry(db)
        drop(db)


@pytest.fixture
def app_host(tmp_path):
    from release_rollback.demo import build_fleet

    fleet = build_fleet(tmp_path / "fleet", 1, start=False)
    yield fleet
    fleet.stop()


def run_rollback(cli, fleet, tmp_path: Path, project: Path, db) -> tuple[Path, object]:
    database = {
        "tool": "sqitch",
        "migrations": str(project),
        "url": db.url.replace("+psycopg", "").replace("+pymysql", ""),
        "target_revision": "orders",
        "backup_dir": str(tmp_path / "backups"),
        "critical_tables": ["orders"],
    }
    if sqitch_registry(db):
        database["registry"] = sqitch_registry(db)
    manifest = tmp_path / "m.yml"
    manifest.write_text(yaml.safe_dump({"rollback_manifest": {"version": fleet.bad, "database": database}}))
    res = cli("plan", "-i", str(fleet.inventory), "-m", str(manifest), "--scope", "database", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    out = json.loads(res.stdout)
    assert out["plan"]["database"]["current_revision"] == "third"
    assert [(s["revision"], s["to"]) for s in out["plan"]["database"]["steps"]] == [
        ("third", "second"),
        ("second", "orders"),
    ]
    run_dir = Path(out["run_dir"])
    assert cli("approve", str(run_dir / "plan.yml"), "--approver", "dba").returncode == 0
    return run_dir, cli("run", str(run_dir / "plan.yml"), "--json")


@pytest.mark.parametrize("dialect", DIALECTS)
def test_sqitch_reverts_two_changes_to_the_previous_schema(dialect, make_db, app_host, cli, tmp_path):
    db = make_db(dialect)
    project = write_sqitch_project(tmp_path / "sqitch", "safe", dialect)
    sqitch_deploy(db, project, "third")
    reference = make_db(dialect)
    sqitch_deploy(reference, project, "orders")

    run_dir, res = run_rollback(cli, app_host, tmp_path, project, db)
    assert res.returncode == 0, res.stdout + res.stderr
    assert sqitch_deployed(db, project) == "orders"
    assert db.schema() == reference.schema()
    rep = json.loads((run_dir / "report.json").read_text())["database"]
    assert rep["applied"] == ["third -> second", "second -> orders"]
    assert rep["backup"]["sha256"].startswith("sha256:")


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_failing_sqitch_revert_stops_at_the_change_reached(dialect, make_db, app_host, cli, tmp_path):
    db = make_db(dialect)
    project = write_sqitch_project(tmp_path / "sqitch", "failing", dialect)
    sqitch_deploy(db, project, "third")

    run_dir, res = run_rollback(cli, app_host, tmp_path, project, db)
    assert res.returncode == 5, res.stdout + res.stderr
    rep = json.loads((run_dir / "report.json").read_text())["database"]
    assert rep["failed_step"] == "second -> orders"
    assert rep["current"] == sqitch_deployed(db, project) == "second"
    indexes = {ix[0] for ix in db.schema()["orders"]["indexes"]}
    assert ("half_applied" in rep) is ("ix_orders_created_at" not in indexes)
    if dialect == "mysql":
        assert rep["half_applied"]["changes"] == ["index ix_orders_created_at on orders dropped"]
