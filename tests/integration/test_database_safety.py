"""The database stage when things go wrong, against the machine's real PostgreSQL and MariaDB servers
and SQLite, through the CLI: a half-applied step and its retry, the run's restore point, the
database the application's env.py really reaches, the classifier's blind spots, and a refused
connection."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from pathlib import Path

import dbkit
import pytest
import sqlalchemy as sa
from dbkit import (
    APP_ENV_PY,
    alembic,
    restore,
    write_manifest,
    write_project,
)

pytestmark = pytest.mark.integration

make_db, app_host = dbkit.make_db, dbkit.app_host  # the shared fixtures


def plan(cli, fleet, manifest, *extra, env=None):
    res = cli("plan", "-i", str(fleet.inventory), "-m", str(manifest), "--scope", "database", "--json", *extra, env=env)
    out = json.loads(res.stdout) if res.stdout.strip().startswith("{") else {}
    return res, out


def report(run_dir: Path) -> dict:
    return json.loads((run_dir / "report.json").read_text())


def contents(db) -> dict:
    """Every table's rows, read independently of the product."""
    eng = db.engine()
    try:
        with eng.connect() as conn:
            return {
                t: sorted(tuple(str(v) for v in r) for r in conn.execute(sa.text(f"SELECT * FROM {t}")))
                for t in sorted(sa.inspect(conn).get_table_names())
            }
    finally:
        eng.dispose()


def backups_in(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if not p.name.startswith("."))


# ------------------------------------------------------------------- the run's restore point


def test_half_applied_mariadb_step_then_resume_keeps_the_complete_backup_as_the_restore_point(
    make_db, app_host, cli, tmp_path
):
    db = make_db("mysql")
    config = write_project(tmp_path / "app", "half")
    alembic(config, db.url, "upgrade", "c3")
    before_schema, before_rows = db.schema(), contents(db)
    assert before_rows["coupons"]  # the data b2's downgrade drops
    backups = tmp_path / "backups"
    manifest = write_manifest(tmp_path / "m.yml", app_host, config, db.url, backups)

    res, out = plan(cli, app_host, manifest)
    assert res.returncode == 0, res.stdout + res.stderr
    run_dir = Path(out["run_dir"])
    assert any("b2 -> a1 is destructive (drops table coupons" in r for r in out["plan"]["risks"])
    assert cli("approve", str(run_dir / "plan.yml"), "--approver", "dba", "--destructive").returncode == 0
    res = cli("run", str(run_dir / "plan.yml"), "--json")
    assert res.returncode == 5, res.stdout + res.stderr

    # MariaDB's DDL is not transactional: b2 -> a1 dropped coupons, then failed.
    assert db.revision() == "b2" and "coupons" not in db.schema()
    first = report(run_dir)["database"]
    point = first["restore_point"]
    assert point["revision"] == "c3" and point["verified"] is True
    assert "creates all" in point["verified_by"]
    assert first["half_applied"]["changes"] == ["table coupons dropped"]

    # The retry refuses to go on from a half-applied step, and takes nothing away from the report.
    res = cli("resume", str(run_dir), "--json")
    assert res.returncode == 5, res.stdout + res.stderr
    again = report(run_dir)
    dbrep = again["database"]
    assert dbrep["restore_point"]["path"] == point["path"]
    assert dbrep["restore_point"]["sha256"] == point["sha256"]
    assert [b["path"] for b in dbrep["backups"]] == [point["path"]]
    assert dbrep["half_applied"]["changes"] == ["table coupons dropped"]
    assert db.revision() == "b2"
    md = (run_dir / "report.md").read_text()
    assert point["path"] in md and point["restore_command"] in md
    assert "half-applied" in md
    assert any(point["path"] in s for s in again["next_steps"])

    # The restore point gives back every table and every row of the database before the rollback.
    scratch = make_db("mysql")
    restore("mysql", point["path"], scratch)
    assert scratch.revision() == "c3"
    assert scratch.schema() == before_schema
    assert contents(scratch) == before_rows


def test_a_retry_after_a_fixed_failure_takes_another_backup_and_keeps_the_first_as_the_restore_point(
    make_db, app_host, cli, tmp_path
):
    db = make_db("postgresql")
    config = write_project(tmp_path / "app", "failing")
    alembic(config, db.url, "upgrade", "c3")
    before_rows = contents(db)
    backups = tmp_path / "backups"
    manifest = write_manifest(tmp_path / "m.yml", app_host, config, db.url, backups)
    res, out = plan(cli, app_host, manifest)
    run_dir = Path(out["run_dir"])
    assert cli("approve", str(run_dir / "plan.yml"), "--approver", "dba").returncode == 0
    res = cli("run", str(run_dir / "plan.yml"), "--json")
    assert res.returncode == 5, res.stdout + res.stderr
    assert db.revision() == "b2"
    point = report(run_dir)["database"]["restore_point"]
    assert point["revision"] == "c3" and "pg_restore --list" in point["verified_by"]

    # The developer fixes b2's downgrade; the operator resumes.
    b2 = config.parent / "migrations" / "versions" / "b2.py"
    b2.write_text(b2.read_text().replace('    op.execute("INSERT INTO orders (no_such_column) VALUES (1)")\n', ""))
    res = cli("resume", str(run_dir), "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    assert db.revision() == "a1"

    dbrep = report(run_dir)["database"]
    assert dbrep["restore_point"]["path"] == point["path"]
    assert [(b["revision"], b["attempt"]) for b in dbrep["backups"]] == [("c3", 1), ("b2", 2)]
    assert dbrep["backups"][0]["path"] == point["path"] != dbrep["backups"][1]["path"]
    assert all(b["verified"] for b in dbrep["backups"])
    assert dbrep["applied"] == ["c3 -> b2", "b2 -> a1"]
    assert point["path"] in (run_dir / "report.md").read_text()
    assert len(backups_in(backups)) == 2
    scratch = make_db("postgresql")
    restore("postgresql", point["path"], scratch)
    assert scratch.revision() == "c3" and contents(scratch) == before_rows


# ------------------------------------------------------------------------- database identity


def test_env_py_reading_its_own_variable_migrates_the_manifest_database_with_url_env(make_db, app_host, cli, tmp_path):
    app_db, manifest_db = make_db("postgresql"), make_db("postgresql")
    config = write_project(tmp_path / "app", "safe", env_py=APP_ENV_PY)
    for db in (app_db, manifest_db):
        alembic(config, db.url, "upgrade", "c3")
    # The environment still points the application at another database.
    env = dict(os.environ, APP_DB_URL=app_db.url)
    manifest = write_manifest(
        tmp_path / "m.yml", app_host, config, manifest_db.url, tmp_path / "backups", url_env="APP_DB_URL"
    )
    res, out = plan(cli, app_host, manifest, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    run_dir = Path(out["run_dir"])
    assert out["plan"]["database"]["identity"]["database"] == manifest_db.name
    assert cli("approve", str(run_dir / "plan.yml"), "--approver", "dba", env=env).returncode == 0
    res = cli("run", str(run_dir / "plan.yml"), "--json", env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert manifest_db.revision() == "a1"
    assert app_db.revision() == "c3"  # untouched
    dbrep = report(run_dir)["database"]
    assert dbrep["identity"]["database"] == manifest_db.name
    scratch = make_db("postgresql")
    restore("postgresql", dbrep["restore_point"]["path"], scratch)
    assert scratch.revision() == "c3"  # the backup is of the database that was migrated


def test_env_py_that_reaches_another_database_blocks_with_both_named_and_a_missing_sqlite_file_is_not_created(
    make_db, app_host, cli, tmp_path
):
    app_db, manifest_db = make_db("postgresql"), make_db("postgresql")
    config = write_project(tmp_path / "app", "safe", env_py=APP_ENV_PY)
    for db in (app_db, manifest_db):
        alembic(config, db.url, "upgrade", "c3")
    backups = tmp_path / "backups"
    manifest = write_manifest(tmp_path / "m.yml", app_host, config, manifest_db.url, backups)  # no url_env

    res, _out = plan(cli, app_host, manifest, env=dict(os.environ, APP_DB_URL=app_db.url))
    assert res.returncode == 3, res.stdout + res.stderr
    said = res.stdout + res.stderr
    assert f"PostgreSQL database {app_db.name}" in said and f"PostgreSQL database {manifest_db.name}" in said
    assert "not the same database" in said
    assert res.stderr.lower().count("nothing was changed") == 1  # one sentence for the operator
    assert json.loads(res.stdout)["error"].lower().count("nothing was changed") == 1
    assert app_db.revision() == manifest_db.revision() == "c3"
    assert not backups.exists()

    # Without the variable, env.py falls back to an SQLite file in the release: an error, never a new file.
    env = {k: v for k, v in os.environ.items() if k != "APP_DB_URL"}
    res, _out = plan(cli, app_host, manifest, env=env)
    assert res.returncode == 3, res.stdout + res.stderr
    fallback = config.parent / "app.db"
    assert f"the SQLite database file {fallback} does not exist" in res.stdout + res.stderr
    assert not fallback.exists()


# ---------------------------------------------------------------- the classifier's blind spots


@pytest.mark.parametrize(
    ("chain", "risk"),
    [
        ("helper_drop", "b2 -> a1 is destructive (drops table coupons)"),
        ("set_null", "b2 -> a1 is destructive (sets column orders.legacy_ref to NULL)"),
        ("raises", "b2 -> a1 is irreversible (downgrade() may raise RuntimeError"),
    ],
)
def test_a_helper_drop_an_update_to_null_and_a_raise_are_refused_without_the_destructive_approval(
    chain, risk, make_db, app_host, cli, tmp_path
):
    db = make_db("sqlite")
    config = write_project(tmp_path / "app", chain)
    alembic(config, db.url, "upgrade", "c3")
    before_rows = contents(db)
    backups = tmp_path / "backups"
    manifest = write_manifest(tmp_path / "m.yml", app_host, config, db.url, backups)
    res, out = plan(cli, app_host, manifest)
    assert res.returncode == 0, res.stdout + res.stderr
    run_dir = Path(out["run_dir"])
    assert any(risk in r for r in out["plan"]["risks"]), out["plan"]["risks"]
    db_step = next(s for s in out["plan"]["steps"] if s["stage"] == "database")
    assert db_step["approval"] == "needs `approve --destructive` for b2 -> a1"

    assert cli("approve", str(run_dir / "plan.yml"), "--approver", "dba").returncode == 0
    res = cli("run", str(run_dir / "plan.yml"), "--json")
    assert res.returncode == 3, res.stdout + res.stderr
    assert db.revision() == "c3" and contents(db) == before_rows
    assert not backups.exists()

    assert cli("approve", str(run_dir / "plan.yml"), "--approver", "dba", "--destructive").returncode == 0
    res = cli("resume", str(run_dir), "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    assert db.revision() == "a1"


# ------------------------------------------------------------------------ readable failures


class Forwarder:
    """A TCP forwarder on a free loopback port to a database server; closed, its port refuses."""

    def __init__(self, port: int):
        self.target = ("127.0.0.1", port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self):
        self.server.close()
        for s in self.sockets:
            s.close()


def test_a_refused_connection_says_connection_refused_in_the_terminal_and_the_report(make_db, app_host, cli, tmp_path):
    db = make_db("postgresql")
    config = write_project(tmp_path / "app", "safe")
    alembic(config, db.url, "upgrade", "c3")
    forwarder = Forwarder(5432)
    try:
        url = db.url.replace("127.0.0.1:5432", f"127.0.0.1:{forwarder.port}")
        manifest = write_manifest(tmp_path / "m.yml", app_host, config, url, tmp_path / "backups")
        res, out = plan(cli, app_host, manifest)
        assert res.returncode == 0, res.stdout + res.stderr
        run_dir = Path(out["run_dir"])
        assert cli("approve", str(run_dir / "plan.yml"), "--approver", "dba").returncode == 0
    finally:
        forwarder.close()  # the database goes away between the plan and the run

    res = cli("run", str(run_dir / "plan.yml"))
    assert res.returncode == 3 or res.returncode == 5, res.stdout + res.stderr
    assert "Connection refused" in res.stdout + res.stderr
    assert "sqlalche.me" not in res.stdout + res.stderr
    dbrep = report(run_dir)
    step = next(s for s in dbrep["steps"] if s["stage"] == "database")
    assert "Connection refused" in step["summary"]
    assert "Connection refused" in (run_dir / "report.md").read_text()
    assert db.revision() == "c3"

    # Planning against the closed port: the same words, and "nothing was changed" said once.
    res, _out = plan(cli, app_host, manifest)
    assert res.returncode == 3
    assert "Connection refused" in res.stdout + res.stderr
    assert res.stderr.lower().count("nothing was changed") == 1
    assert json.loads(res.stdout)["error"].lower().count("nothing was changed") == 1
