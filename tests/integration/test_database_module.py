"""The db_migrate module called directly (ansible ad-hoc on localhost) where the CLI cannot reach:
an attempt killed in the middle of a down step."""

from __future__ import annotations

import contextlib
import json
import os
import signal
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
    """kill -9 the attempt and everything it started, as a crash of the machine running it would."""
    tree = [proc.pid, *descendants(proc.pid)]
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
