"""The db_migrate module called directly (ansible ad-hoc on localhost) where the CLI cannot reach:
an attempt killed in the middle of a down step."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dbkit import alembic, create, restore, write_project

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def adhoc(args: dict) -> subprocess.Popen:
    env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=str(ROOT / "collections"),
        ANSIBLE_CALLBACK_RESULT_FORMAT="json",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
    )
    cmd = [str(Path(sys.executable).parent / "ansible"), "localhost", "-m", "release.rollback.db_migrate"]
    return subprocess.Popen(
        [*cmd, "-a", json.dumps(args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def descendants(pid: int) -> list[int]:
    """Every process started under ``pid`` (ansible's workers start sessions of their own)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill_tree(proc: subprocess.Popen) -> None:
    """kill -9 the attempt and everything it started, as a crash of the machine running it would.

    The tree is frozen first (SIGSTOP until no new process appears): a process that forks while the
    tree is being read would otherwise leave its child running on, orphaned, to finish the step."""
    tree: list[int] = []
    for _ in range(100):  # bounded: a stopped process cannot start another
        new = [pid for pid in [proc.pid, *descendants(proc.pid)] if pid not in tree]
        if not new:
            break
        for pid in new:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        tree.extend(new)
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.communicate()
    for pid in tree:
        for _ in range(100):  # bounded: gone within 10 s
            try:
                if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            except OSError:
                break
            time.sleep(0.1)


def result(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=300)
    assert "localhost | " in out, out + err
    head, _, body = out[out.index("localhost | ") :].partition(" => ")
    res = json.loads(body)
    res["failed"] = "FAILED" in head
    return res


def test_an_attempt_killed_mid_step_leaves_the_restore_point_to_the_next_attempt(tmp_path):
    db = create("sqlite", tmp_path)
    config = write_project(tmp_path / "app", "slow")
    alembic(config, db.url, "upgrade", "c3")
    backups = tmp_path / "backups"
    args = {
        "state": "downgraded",
        "config": str(config),
        "url": db.url,
        "python": sys.executable,
        "target_revision": "a1",
        "expected_revision": "c3",
        "run_id": "20261203T101500Z-killed",
        "approved_steps": ["b2"],  # its downgrade calls time.sleep(), which the classifier cannot follow
        "backup_dir": str(backups),
        "app": "shop",
    }
    record = backups / ".release-rollback-run-20261203T101500Z-killed.json"
    first = adhoc(args)
    running = None
    for _ in range(600):  # until the attempt is inside b2 -> a1 (bounded: 600 looks)
        if record.exists():
            running = json.loads(record.read_text()).get("running")
            if running and running["step"] == "b2 -> a1":
                break
        assert first.poll() is None, first.communicate()
        time.sleep(0.2)
    assert running and running["step"] == "b2 -> a1"
    kill_tree(first)  # the attempt dies without publishing anything
    assert db.revision() == "b2"
    point = json.loads(record.read_text())["restore_point"]
    assert point["revision"] == "c3"

    b2 = config.parent / "migrations" / "versions" / "b2.py"
    b2.write_text(b2.read_text().replace("time.sleep(120)\n    ", ""))
    res = result(adhoc(args))
    assert not res["failed"], res
    assert db.revision() == "a1"
    dbrep = res["database"]
    assert dbrep["restore_point"]["path"] == point["path"] and dbrep["restore_point"]["revision"] == "c3"
    assert [(b["revision"], b["attempt"]) for b in dbrep["backups"]] == [("c3", 1), ("b2", 2)]
    assert dbrep["applied"] == ["c3 -> b2", "b2 -> a1"]
    assert "half_applied" not in dbrep  # the killed step had changed nothing yet
    scratch = create("sqlite", tmp_path)
    restore("sqlite", point["path"], scratch)
    assert scratch.revision() == "c3"


# golang-migrate's files with a migrations table of another name (`-x-migrations-table`):
# settings.table names it, and the sql tool reads and writes that table only.
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
    status = result(adhoc(args))
    assert status["failed"] is False and status["current"] == "2", status
    assert [(s["revision"], s["to"]) for s in status["steps"]] == [("2", "1")]

    done = result(adhoc(dict(args, state="downgraded")))
    assert done["failed"] is False and done["current"] == "1", done
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT version, dirty FROM app_migrations").fetchall() == [(1, 0)]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "schema_migrations" not in tables and "kept" in tables

    wrong = result(adhoc(dict(args, settings={"table": "app_migrations; DROP TABLE orders"})))
    assert wrong["failed"] is True and "is not a table name" in wrong["msg"]
    unknown = result(adhoc(dict(args, settings={"tabel": "x"})))
    assert unknown["failed"] is True and unknown["msg"] == "settings tabel is not a setting of tool sql: use table"
