"""Secrets never reach a file of the run: a flag-service token and a database password are planted in
the inputs, every stage runs (a success path and a failure path), and every file the run wrote is
scanned: events, state, audit trail, plan, approval, reports, and the temporary ansible-runner
private data dirs (which must be gone).
"""

from __future__ import annotations

import glob
import os
import subprocess
from pathlib import Path

import dbkit
import pytest
from helpers import FlagService, edit_manifest, report, statuses
from release_rollback import jobs

TOKEN = "tok-PLANTED-7d1c2f90b6"
PASSWORD = "pw-PLANTED-4e8a11c3d2"


@pytest.fixture
def pg(tmp_path, need):
    need(dbkit.server_up(dbkit.PG_ADMIN), "PostgreSQL on 127.0.0.1:5432")
    db = dbkit.create("postgresql", tmp_path, PASSWORD)
    yield db
    dbkit.drop(db)


def planted_inputs(fleet, db, service) -> dict:
    """Point the demo fleet's database at PostgreSQL (password in the URL) and its flags at the service."""
    config = fleet.app_root("web1") / "releases" / fleet.bad / "alembic.ini"
    dbkit.alembic(config, db.url, "upgrade", "head")

    def change(m):
        m["database"]["url"] = db.url
        m["database"]["backup_dir"] = str(fleet.root / "backups")
        m["flags"] = {
            "backend": "http",
            "names": ["new-checkout"],
            "token_env": "ROLLBACK_TEST_FLAG_TOKEN",
            "request": {
                "method": "PUT",
                "url": service.url + "/flags/{flag}",
                "headers": {"Authorization": "Bearer {token}"},
                "body": {"enabled": False},
            },
            "read_back": {"url": service.url + "/flags/{flag}", "field": "enabled", "off_value": False},
        }

    edit_manifest(fleet, change)
    return dict(os.environ, ROLLBACK_TEST_FLAG_TOKEN=TOKEN)


def scan(paths: list[Path]) -> list[str]:
    leaks = []
    for root in paths:
        for f in [root] if root.is_file() else root.rglob("*"):
            if f.is_file():
                text = f.read_bytes()
                for secret in (TOKEN, PASSWORD):
                    if secret.encode() in text:
                        leaks.append(f"{secret[:10]}... in {f}")
    return leaks


def run(cli, fleet, environ) -> subprocess.CompletedProcess:
    return cli(
        "run",
        "-i",
        str(fleet.inventory),
        "-m",
        str(fleet.manifest),
        "--approver",
        "alice",
        "--yes",
        env=environ,
        timeout=600,
    )


def run_files(cli) -> list[Path]:
    """Everything a run writes: the run directories, the locks and the release record."""
    return [p for p in (cli.runs, cli.runs.parent / "locks", cli.runs.parent / "releases.jsonl") if p.exists()]


def runner_dirs() -> list[Path]:
    """ansible-runner private data dirs still there (the driver removes its own after each job), in
    memory (/dev/shm) or in the temporary directory."""
    return [Path(p) for root in jobs.private_roots() for p in glob.glob(os.path.join(root, "rollback-*-*"))]


def test_a_planted_token_and_db_password_reach_no_file_on_the_success_path(cli, fleet, pg):
    service = FlagService(TOKEN)
    try:
        environ = planted_inputs(fleet, pg, service)
        proc = run(cli, fleet, environ)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        (run_dir,) = cli.run_dirs()
        assert set(statuses(run_dir).values()) == {"ok"}
        assert service.auth_seen == [f"Bearer {TOKEN}"] and service.state["new-checkout"] is False
        assert pg.revision() == "a1"
        assert scan(runner_dirs()) == []  # the private data dirs (extra vars) are gone or clean
        assert scan(run_files(cli)) == []
        assert TOKEN not in proc.stdout + proc.stderr and PASSWORD not in proc.stdout + proc.stderr
    finally:
        service.close()


def test_a_planted_token_and_db_password_reach_no_file_on_the_failure_path(cli, fleet, pg):
    service = FlagService(TOKEN, fail=True)
    migration = fleet.app_root("web1") / "releases" / fleet.bad / "migrations" / "versions" / "b2_orders_index.py"
    migration.write_text(
        migration.read_text().replace(
            'op.drop_index("ix_orders_created_at", table_name="orders")',
            f"op.execute(\"SELECT 'cannot connect as {PASSWORD}' FROM no_such_table\")",  # fails when it runs
        )
    )
    try:
        environ = planted_inputs(fleet, pg, service)
        proc = run(cli, fleet, environ)
        assert proc.returncode == 5, proc.stdout + proc.stderr
        (run_dir,) = cli.run_dirs()
        st = statuses(run_dir)
        assert st["feature_flags"] == "unavailable" and st["database"] == "failed"
        assert report(run_dir)["exit_state"] == "partially completed"
        leaks = scan(run_files(cli)) + scan(runner_dirs())
        # The downgrade's own error message carries the password (the application printed it): the run
        # must still not record it anywhere.
        assert leaks == []
    finally:
        service.close()
