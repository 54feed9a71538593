"""What the operator's terminal shows for a run: outcomes, never machinery, ending as status and the report do.

``release-rollback run`` runs in a pseudo-terminal (so the live table is on), 200 columns wide,
against a real three-host fleet whose previous release cannot start on web2: the code stage fails
and halts the rollback.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import time

import pytest
from conftest import CLI, Cli
from helpers import statuses

pytestmark = pytest.mark.e2e

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")


def _run_in_pty(args: list[str], cwd, timeout: float = 600) -> tuple[int, str]:
    """Run ``args`` with a pseudo-terminal as stdin, stdout and stderr; return its exit code and output."""
    leader, follower = pty.openpty()
    env = dict(os.environ, COLUMNS="200", LINES="60", TERM="xterm-256color")
    proc = subprocess.Popen(args, cwd=cwd, stdin=follower, stdout=follower, stderr=follower, env=env)
    os.close(follower)
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 1)
        if ready:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the terminal closed: the command ended
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(leader)
    code = proc.wait(30)
    return code, b"".join(chunks).decode("utf-8", "replace")


def test_a_halted_run_ends_on_a_table_of_outcomes_that_matches_status_and_the_report(fleet, tmp_path):
    server = fleet.app_root("web2") / "releases" / fleet.good / "server.py"
    server.write_text("raise SystemExit('config error: cannot bind')\n")
    runs = tmp_path / "runs"
    args = [CLI, "--runs-dir", str(runs), "run", "-i", str(fleet.inventory), "-m", str(fleet.manifest)]
    code, raw = _run_in_pty([*args, "--approver", "alice", "--yes"], tmp_path)
    screen = _ANSI.sub("", raw)
    assert code == 5, screen[-3000:]

    # Live frames and the summary show what people recognise, never Ansible's or the stages' machinery.
    for machinery in (
        "Validating arguments against arg spec",
        "Fail the job when",
        "Publish the result of stage",
        "Decide whether this batch",
    ):
        assert machinery not in screen

    final = screen[screen.rindex("release-rollback: partially completed") :]
    rows = {m[0]: m[1] for m in re.findall(r"│ (\w+)\s+│ (\w+)\s+│", final)}
    assert rows["code_config"] == "FAILED"
    assert rows["database"] == rows["infrastructure"] == rows["validate"] == "skipped"
    assert rows["feature_flags"] == "ok" and rows["report"] == "ok"
    assert "running" not in final and "pending" not in final
    # A skipped stage took no time: its time cell is empty.
    assert re.search(r"│ database\s+│ skipped\s+│\s+│ stage code_config failed and halts", final)

    # One line per host with the release it went from and the one it runs now, as read back.
    hosts = dict(re.findall(r"│\s+(web\d)\s+│ (\w+)\s+│", final))
    assert hosts == {"web1": "ok", "web2": "FAILED", "web3": "ok"}
    for host in ("web1", "web3"):
        line = next(ln for ln in final.splitlines() if f"  {host} " in ln)
        assert f"{fleet.bad} -> {fleet.good}" in line and "health 200" in line
    assert "Exit state: partially completed" in final

    # The same states as `status` and the report.
    (run_dir,) = Cli(runs, tmp_path).run_dirs()
    expected = statuses(run_dir)
    shown = {k: v for k, v in rows.items() if k in expected}
    assert shown == {k: ("FAILED" if v == "failed" else v) for k, v in expected.items()}
    report = json.loads((run_dir / "report.json").read_text())
    assert {s["stage"]: s["status"] for s in report["steps"]} == expected
    status = Cli(runs, tmp_path)("status", run_dir.name)
    assert status.returncode == 0, status.stderr
    for stage, state in expected.items():
        assert re.search(rf"^\s+{stage}\s+{state}\b", status.stdout, re.M), (stage, status.stdout)


def test_plan_on_a_terminal_shows_no_step_that_did_not_run_and_no_machinery(fleet, tmp_path):
    runs = tmp_path / "runs"
    args = [CLI, "--runs-dir", str(runs), "plan", "-i", str(fleet.inventory), "-m", str(fleet.manifest)]
    code, raw = _run_in_pty(args, tmp_path)
    screen = _ANSI.sub("", raw)
    assert code == 0, screen[-3000:]
    # The flag stage's tasks are skipped while planning: "plan changes nothing" is what the screen says too.
    assert "Turn the flags off" not in screen
    for machinery in (
        "Validating arguments against arg spec",
        "Decide whether this stage runs",
        "Gathering Facts",
        "Fix the run directory",
    ):
        assert machinery not in screen
    assert f"Rollback plan {Cli(runs, tmp_path).run_dirs()[0].name} for demo-shop" in screen
