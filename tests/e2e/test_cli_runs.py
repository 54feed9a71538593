"""Where runs live and how a command names one: run ids, --runs-dir on every subcommand, a stable home.

Also: input is checked before anything is written (a nested typo leaves no run directory), and
``plan --json`` answers in JSON when it cannot plan.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import CLI
from helpers import edit_manifest

pytestmark = pytest.mark.e2e


def rr(*args: str, cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """The CLI as a person types it: no --runs-dir unless the arguments give one."""
    return subprocess.run(
        [CLI, *args],
        cwd=cwd,
        env=dict(os.environ, **(env or {})),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def runs_in(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("*") if (p / "state.json").is_file()) if root.is_dir() else []


def test_every_run_command_takes_a_run_id_and_runs_dir_after_the_subcommand(fleet, tmp_path):
    runs = tmp_path / "elsewhere" / "runs"
    planned = rr("plan", "--runs-dir", str(runs), "-i", str(fleet.inventory), "-m", str(fleet.manifest), cwd=tmp_path)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    (run_dir,) = runs_in(runs)
    run_id = run_dir.name
    # Run ids wherever a run directory (or its plan) is taken; --runs-dir after the subcommand.
    approved = rr("approve", run_id, "--approver", "alice", "--runs-dir", str(runs), cwd=tmp_path)
    assert approved.returncode == 0, approved.stderr
    assert "Approved by alice" in approved.stdout
    status = rr("status", run_id, "--runs-dir", str(runs), cwd=tmp_path)
    assert status.returncode == 0 and f"Run {run_id} ({run_dir})" in status.stdout, status.stderr
    # report finds the run by its id too; an approved run has no report yet, and says so with its plan.
    shown = rr("report", run_id, "--format", "json", "--runs-dir", str(runs), cwd=tmp_path)
    assert shown.returncode == 2, shown.stdout + shown.stderr
    assert f"run {run_id} is approved and has not run" in shown.stderr and str(run_dir / "plan.yml") in shown.stderr
    verified = rr("audit", "verify", run_id, "--runs-dir", str(runs), cwd=tmp_path)
    assert verified.returncode == 0 and "audit trail intact" in verified.stdout, verified.stderr
    # The environment variable names the same place for every command.
    env = {"RELEASE_ROLLBACK_RUNS_DIR": str(runs)}
    assert f"Run {run_id}" in rr("status", cwd=tmp_path, env=env).stdout
    assert rr("audit", "verify", run_id, cwd=tmp_path, env=env).returncode == 0
    # A run id that is not there is one sentence and exit 2.
    missing = rr("status", "20990101T000000-0000", "--runs-dir", str(runs), cwd=tmp_path)
    assert missing.returncode == 2
    assert f"neither a run directory nor the id of a run under {runs}" in missing.stderr


def test_runs_of_one_checkout_are_shared_by_all_its_directories(fleet, tmp_path):
    checkout = tmp_path / "ops-repo"
    (checkout / "teams" / "shop").mkdir(parents=True)
    (checkout / "docs").mkdir()
    subprocess.run(["git", "init", "-q", str(checkout)], check=True)
    done = rr(
        "run", "-i", str(fleet.inventory), "-m", str(fleet.manifest), "--approver", "alice", "--yes",
        cwd=checkout / "teams" / "shop",
        env={"RELEASE_ROLLBACK_RUNS_DIR": ""},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    home = checkout / ".rollback"
    (run_dir,) = runs_in(home / "runs")
    # From another directory of the same checkout: the same runs and the same release record.
    status = rr("status", cwd=checkout / "docs", env={"RELEASE_ROLLBACK_RUNS_DIR": ""})
    assert status.returncode == 0 and f"Run {run_dir.name}" in status.stdout, status.stderr
    record = [json.loads(line) for line in (home / "releases.jsonl").read_text().splitlines()]
    assert record[-1]["version"] == fleet.bad and record[-1]["status"] == "rolled_back"
    assert not (checkout / "teams" / "shop" / ".rollback").exists()


def test_outside_any_project_runs_go_to_the_state_home(fleet, tmp_path):
    outside = tmp_path / "nowhere"
    outside.mkdir()
    state = tmp_path / "state"
    env = {"RELEASE_ROLLBACK_RUNS_DIR": "", "XDG_STATE_HOME": str(state)}
    planned = rr("plan", "-i", str(fleet.inventory), "-m", str(fleet.manifest), cwd=outside, env=env)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    (run_dir,) = runs_in(state / "release-rollback" / "runs")
    assert f"Run {run_dir.name}" in rr("status", cwd=tmp_path, env=env).stdout


def test_a_nested_typo_is_refused_with_a_suggestion_and_leaves_no_run_directory(fleet, tmp_path):
    def typo(m):
        m["database"]["backup_dri"] = m["database"].pop("backup_dir")

    edit_manifest(fleet, typo)
    runs = tmp_path / "runs"
    for command in (["plan"], ["run", "--approver", "alice", "--yes"]):
        proc = rr(
            *command, "-i", str(fleet.inventory), "-m", str(fleet.manifest), "--runs-dir", str(runs), cwd=tmp_path
        )
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "unknown key database.backup_dri (did you mean backup_dir?)" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
        assert not runs.exists() or not any(runs.iterdir()), sorted(runs.rglob("*"))


def test_plan_json_answers_in_json_when_the_plan_is_blocked_or_the_input_is_bad(fleet, tmp_path):
    runs = tmp_path / "runs"
    args = ["plan", "--json", "--runs-dir", str(runs), "-i", str(fleet.inventory)]
    blocked = rr(*args, "-m", str(fleet.manifest), "--target", "19990101000000Z", cwd=tmp_path)
    assert blocked.returncode == 3, blocked.stdout + blocked.stderr
    answer = json.loads(blocked.stdout)
    assert answer["exit_state"] == "blocked" and answer["exit_code"] == 3
    assert "19990101000000Z" in answer["error"] and answer["plan"]["blockers"]
    assert Path(answer["run_dir"]).is_dir()

    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump({"rollback_manifest": {"app": "shop", "flagz": {}}}))
    refused = rr(*args, "-m", str(bad), cwd=tmp_path)
    assert refused.returncode == 2
    answer = json.loads(refused.stdout)
    assert answer["exit_state"] == "bad input" and "did you mean flags?" in answer["error"]


def test_the_ansible_cfg_where_the_operator_stands_applies_to_the_jobs_as_to_ansible_playbook(fleet, tmp_path):
    # The project's ansible.cfg enables a callback of its own and sets forks: the driver's jobs read it,
    # as ansible-playbook started in the same directory would, and keep the driver's own callback.
    project = tmp_path / "ops-project"
    project.mkdir()
    tree = tmp_path / "per-host-results"
    (project / "ansible.cfg").write_text(
        f"[defaults]\ncallbacks_enabled = ansible.builtin.tree\nforks = 2\n\n[callback_tree]\ndirectory = {tree}\n"
    )
    runs = str(tmp_path / "runs")

    # A world-writable directory's ansible.cfg is one ansible-playbook ignores, and so do the jobs.
    shared = tmp_path / "shared-tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    (shared / "ansible.cfg").write_text((project / "ansible.cfg").read_text())
    planned = rr("plan", "-i", str(fleet.inventory), "-m", str(fleet.manifest), "--runs-dir", runs, cwd=shared)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert not tree.exists()

    done = rr(
        "run", "-i", str(fleet.inventory), "-m", str(fleet.manifest), "--approver", "alice", "--yes",
        "--runs-dir", runs, cwd=project,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    # Every host of every job: assess and the execution stages, the load balancer and the database too.
    assert sorted(p.name for p in tree.iterdir()) == ["db1", "lb1", "localhost", "web1", "web2", "web3"]
