"""The ledger's bad input and unreachable server: one sentence with the fix, no password shown or written,
nothing created."""

from __future__ import annotations

import os
import subprocess

from alembic.config import Config
from alembic.script import ScriptDirectory
from conftest import CLI
from release_rollback import ledger


def test_the_newest_migration_is_the_one_the_ledger_checks_for():
    cfg = Config()
    cfg.set_main_option("script_location", str(ledger.MIGRATIONS))
    assert ScriptDirectory.from_config(cfg).get_current_head() == ledger.HEAD


def _cli(tmp_path, *args, **env):
    full = {k: v for k, v in os.environ.items() if k not in ("RELEASE_ROLLBACK_LEDGER", "PGPASSWORD")}
    full.update(env, HOME=str(tmp_path))
    return subprocess.run(
        [CLI, "--runs-dir", str(tmp_path / "runs"), *args], cwd=tmp_path, env=full, capture_output=True, text=True
    )


def test_a_ledger_that_is_neither_sqlite_nor_postgresql_is_refused_in_one_sentence(tmp_path):
    res = _cli(tmp_path, "--ledger", "mysql://root:hunter2@127.0.0.1/ledger", "status", "--team")
    assert res.returncode == 2
    assert "neither SQLite nor PostgreSQL" in res.stderr and "hunter2" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_an_unreachable_ledger_stops_a_new_run_before_anything_is_created_and_the_password_is_never_shown(tmp_path):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  hosts: {}\n")
    url = "postgresql://ops:s3cret-pw@127.0.0.1:1/ledger"
    res = _cli(tmp_path, "--ledger", url, "plan", "-i", str(inventory))
    assert res.returncode == 1, res.stderr
    assert "cannot be reached" in res.stderr and "PGPASSWORD" in res.stderr
    assert "s3cret-pw" not in res.stdout + res.stderr and "postgresql://ops@127.0.0.1:1/ledger" in res.stderr
    assert not [p for p in (tmp_path / "runs").glob("*") if p.is_dir()]
    # From the environment too, and the run never begins.
    res = _cli(tmp_path, "plan", "-i", str(inventory), RELEASE_ROLLBACK_LEDGER=url)
    assert res.returncode == 1 and "s3cret-pw" not in res.stdout + res.stderr
    assert not [p for p in (tmp_path / "runs").glob("*") if p.is_dir()]


def test_configure_moves_the_password_out_of_the_url(monkeypatch):
    # configure() sets both in this process: monkeypatch puts them back as they were afterwards.
    monkeypatch.setenv("PGPASSWORD", "")
    monkeypatch.setenv(ledger.ENV, "")
    clean = ledger.configure("postgresql://ops:pw%40x@db.example:5432/ledger?sslmode=require")
    assert clean == "postgresql://ops@db.example:5432/ledger?sslmode=require"
    assert os.environ["PGPASSWORD"] == "pw@x" and os.environ[ledger.ENV] == clean
    assert ledger.redact("postgresql://ops:pw@db/ledger") == "postgresql://ops:***@db/ledger"
