"""golang-migrate's files with a migrations table of another name (`-x-migrations-table`):
settings.table names it, and the sql tool reads and writes that table only."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def db_migrate(args: dict) -> dict:
    env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=str(ROOT / "collections"),
        ANSIBLE_CALLBACK_RESULT_FORMAT="json",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
    )
    cmd = [str(Path(sys.executable).parent / "ansible"), "localhost", "-m", "release.rollback.db_migrate"]
    done = subprocess.run([*cmd, "-a", json.dumps(args)], env=env, capture_output=True, text=True, timeout=120)
    head, _, body = done.stdout[done.stdout.index("localhost | ") :].partition(" => ")
    return dict(json.loads(body), failed="FAILED" in head)


def test_the_migrations_table_is_the_one_settings_table_names(tmp_path):
    scripts = tmp_path / "migrations"
    scripts.mkdir()
    (scripts / "1_orders.up.sql").write_text("CREATE TABLE orders (id INTEGER);")
    (scripts / "1_orders.down.sql").write_text("DROP TABLE orders;")
    (scripts / "2_notes.up.sql").write_text("CREATE TABLE notes (id INTEGER);")
    (scripts / "2_notes.down.sql").write_text("CREATE TABLE kept (id INTEGER);")
    db = tmp_path / "app.db"
    with sqlite3.connect(db) as conn:
        conn.executescript(
            "CREATE TABLE app_migrations (version BIGINT PRIMARY KEY, dirty BOOLEAN);"
            "INSERT INTO app_migrations VALUES (2, 0);"
            "CREATE TABLE orders (id INTEGER); CREATE TABLE notes (id INTEGER);"
        )
    args = {
        "tool": "sql",
        "migrations": str(scripts),
        "url": f"sqlite:///{db}",
        "target_revision": "1",
        "settings": {"table": "app_migrations"},
        "backup_dir": str(tmp_path / "backups"),
    }
    status = db_migrate(args)
    assert status["failed"] is False and status["current"] == "2", status
    assert [(s["revision"], s["to"]) for s in status["steps"]] == [("2", "1")]

    done = db_migrate(dict(args, state="downgraded"))
    assert done["failed"] is False and done["current"] == "1", done
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT version, dirty FROM app_migrations").fetchall() == [(1, 0)]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "schema_migrations" not in tables and "kept" in tables

    wrong = db_migrate(dict(args, settings={"table": "app_migrations; DROP TABLE orders"}))
    assert wrong["failed"] is True and "is not a table name" in wrong["msg"]
    unknown = db_migrate(dict(args, settings={"tabel": "x"}))
    assert unknown["failed"] is True and unknown["msg"] == "settings tabel is not a setting of tool sql: use table"
