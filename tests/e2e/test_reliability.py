"""A rollback must never add a second incident: crash and resume, cancel, abort, locks, windows,
separation of duties, resume on some hosts only, and hostile input. Every failure is real: the
driver is killed with SIGKILL, stopped with SIGTERM, raced by a second driver.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import assert_rolled_back, audit_events, fleet_state, report, resume_after_kill, statuses

CLI_PATH = str(Path(sys.executable).parent / "release-rollback")


def start_run(cli, fleet, *extra: str) -> subprocess.Popen:
    return cli.popen(
        "run", "-i", str(fleet.inventory), "-m", str(fleet.manifest), "--approver", "alice", "--yes", *extra
    )


def wait_for_stage(cli, stage: str, proc: subprocess.Popen, task_events: int = 1, timeout: float = 240) -> Path:
    """Wait until the run is inside ``stage`` (its events file has begun); return the run dir."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before reaching " + stage + ": " + proc.communicate()[1]
        for run_dir in cli.run_dirs():
            try:
                state = json.loads((run_dir / "state.json").read_text())
            except (OSError, ValueError):
                continue
            events = run_dir / "events" / f"{stage}.jsonl"
            if state.get("current_stage") == stage and events.exists():
                starts = sum('"runner_on_start"' in line for line in events.read_text().splitlines())
                if starts >= task_events:
                    return run_dir
        time.sleep(0.05)
    raise AssertionError(f"the run never reached stage {stage}")


def wait_no_playbooks(marker: str, timeout: float = 120) -> None:
    """Let an orphaned ansible-playbook of a killed driver finish or die before resuming."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode != 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"processes matching {marker} are still running")


# The flags, database and infrastructure stages are killed at their most delicate moment (after the
# change, before it is published) in test_hostile.py and test_lifecycle.py, with the same checks.
@pytest.mark.parametrize("stage", ["code_config", "validate"])
def test_kill_9_in_the_middle_of_a_stage_then_resume_finishes_the_run(cli, fleet, stage):
    proc = start_run(cli, fleet)
    run_dir = wait_for_stage(cli, stage, proc)
    proc.kill()
    proc.wait()
    wait_no_playbooks(str(fleet.inventory))
    if stage == "code_config":
        # The driver ran feature_flags to validate as one job: that job does not outlive the driver
        # (its terminal closes), so no later stage runs unrecorded.
        assert fleet.db_revision() == "b2"
    resume_after_kill(cli, fleet, run_dir, stage)


def sigterm_during(cli, fleet, stage: str) -> tuple[Path, str]:
    """SIGTERM to a run inside ``stage``: it ends aborted (exit 4). Returns the run dir and stderr."""
    proc = start_run(cli, fleet)
    run_dir = wait_for_stage(cli, stage, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 4, out + err
    assert f"Stopping after {stage} finishes" in err
    return run_dir, err


def test_sigterm_stops_at_the_stage_boundary_and_ends_aborted(cli, fleet):
    run_dir, _err = sigterm_during(cli, fleet, "code_config")
    # The stage that was running finished cleanly: no host is left half-switched.
    assert all(fleet.live(h) == f"./releases/{fleet.good}" for h in fleet.hosts)
    assert fleet.db_revision() == "b2"
    rep = report(run_dir)
    assert rep["exit_state"] == "aborted"
    assert "before stage database" in rep["known_limitations"][0]
    assert statuses(run_dir)["database"] == "not run"
    # Stopped, not given up: the run is paused, and says how to go on or end it.
    status = cli("status", str(run_dir)).stdout
    assert "paused (stopped by the operator)" in status and f"next: release-rollback resume {run_dir}" in status


def test_sigterm_during_the_flags_stage_changes_no_host_and_resume_finishes(cli, fleet):
    run_dir, _err = sigterm_during(cli, fleet, "feature_flags")
    assert fleet.flag()["defaultVariant"] == "off"  # the stage under way finished
    # Stopped inside the one job that runs the stages: no host was touched, and the host locks taken
    # at assess were given back by that job.
    assert all(fleet.live(h) == f"./releases/{fleet.bad}" for h in fleet.hosts)
    assert not [h for h in fleet.hosts if (fleet.app_root(h) / ".rollback.lock").exists()]
    assert not (run_dir / "stop-requested").exists()
    events = audit_events(run_dir)
    released = next(e for e in events if e["event"] == "host_locks.released")
    assert released["reason"] == "stage code_config does not run: stopped by the operator"
    assert sorted(released["hosts"]) == sorted(fleet.hosts)
    st = statuses(run_dir)
    assert st["feature_flags"] == "ok" and st["code_config"] == "not run"
    assert "before stage code_config" in report(run_dir)["known_limitations"][0]
    resumed = cli("resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert_rolled_back(fleet)


def test_abort_ends_a_partial_run_and_resume_is_refused_afterwards(cli, fleet):
    (fleet.app_root("web1") / "releases" / fleet.good / "server.py").write_text("raise SystemExit(3)\n")
    proc = cli("run", "-i", str(fleet.inventory), "-m", str(fleet.manifest), "--approver", "alice", "--yes")
    assert proc.returncode == 5
    (run_dir,) = cli.run_dirs()
    # web1 failed and keeps its lock; the abort cannot give it back (the file is immutable meanwhile).
    lock = fleet.app_root("web1") / ".rollback.lock"
    subprocess.run(["chattr", "+i", str(lock)], check=True)
    try:
        aborted = cli("abort", str(run_dir), "--reason", "superseded by hotfix 1.4.3")
    finally:
        subprocess.run(["chattr", "-i", str(lock)], check=True)
    assert aborted.returncode == 4, aborted.stderr
    assert lock.exists()
    assert (
        "The host lock on web1 could not be given back (events/unlock.jsonl says why): a new plan takes it back "
        "with --break-lock (audited)."
    ) in aborted.stdout
    released = next(e for e in audit_events(run_dir) if e["event"] == "host_locks.released")
    assert released["kept"] == ["web1"]
    # A new plan names the leftover lock and the way on that works: a final run is never aborted again.
    planned = cli("plan", "-i", str(fleet.inventory), "-m", str(fleet.manifest))
    assert planned.returncode == 3, planned.stdout + planned.stderr
    assert (
        f"locked by run {run_dir.name}" in planned.stderr
        and "that run is aborted, so its lock is left over: plan again with --break-lock" in planned.stderr
    ), planned.stderr
    assert f"release-rollback abort {run_dir}" not in planned.stderr
    taken = cli("plan", "-i", str(fleet.inventory), "-m", str(fleet.manifest), "--break-lock")
    assert "locked by run" not in taken.stderr, taken.stderr
    assert not lock.exists()
    # The lock it replaced is in its audit trail, with its holder.
    broken = [e for e in audit_events(cli.run_dirs()[-1]) if e["event"] == "host_lock.broken"]
    assert [(e["host"], e["holder"]["run_id"]) for e in broken] == [("web1", run_dir.name)], broken
    rep = report(run_dir)
    assert rep["exit_state"] == "aborted"
    assert "superseded by hotfix 1.4.3" in rep["known_limitations"][0]
    assert any(e["event"] == "run.aborted" for e in audit_events(run_dir))
    refused = cli("resume", str(run_dir))
    assert refused.returncode == 3 and "aborted" in refused.stderr
    # An aborted run is never signed off: neither its status nor its report awaits a sign-off, and signoff is
    # refused.
    status = cli("status", str(run_dir))
    assert "  sign-off:   none: a run that ended aborted is not signed off\n" in status.stdout, status.stdout
    assert "- **Sign-off:** none: a run that ended aborted is not signed off" in (run_dir / "report.md").read_text()
    assert "awaiting sign-off" not in (run_dir / "report.html").read_text()
    unsigned = cli("signoff", str(run_dir), "--by", "rm-carol")
    assert unsigned.returncode == 3 and "`signoff` is not possible while run" in unsigned.stderr, unsigned.stderr
    assert not (run_dir / "signoff.json").exists()


def test_a_second_rollback_of_the_same_environment_is_refused_with_the_holder(cli, fleet):
    first = start_run(cli, fleet)
    first_dir = wait_for_stage(cli, "code_config", first)
    second = cli("run", "-i", str(fleet.inventory), "-m", str(fleet.manifest), "--approver", "bob", "--yes")
    out, err = first.communicate(timeout=300)
    assert second.returncode == 3, second.stdout + second.stderr
    assert f"run {first_dir.name} by" in second.stderr and "min" in second.stderr
    assert first.returncode == 0, out + err


def test_a_stale_lock_is_reported_and_broken_only_on_request(cli, fleet):
    dead = subprocess.Popen(["true"])
    dead.wait()
    lock_dir = cli.runs.parent / "locks"
    lock_dir.mkdir(parents=True)
    from release_rollback import locks

    name = locks.lock_name({"app": "demo-shop"}, str(fleet.inventory))
    (lock_dir / f"{name}.lock").write_text(
        json.dumps(
            {
                "run_id": "20260101T000000-0001",
                "operator": "mallory",
                "pid": dead.pid,
                "host": socket.gethostname(),
                "since": time.time() - 3600,
                "token": "x",
            }
        )
    )
    refused = cli("run", "-i", str(fleet.inventory), "-m", str(fleet.manifest), "--approver", "alice", "--yes")
    assert refused.returncode == 3
    assert "stale lock" in refused.stderr and "mallory" in refused.stderr and "--break-lock" in refused.stderr
    assert fleet.live("web1") == f"./releases/{fleet.bad}"
    (run_dir,) = cli.run_dirs()
    broken = cli("run", str(run_dir / "plan.yml"), "--break-lock")
    assert broken.returncode == 0, broken.stdout + broken.stderr
    entry = next(e for e in audit_events(run_dir) if e["event"] == "lock.broken")
    assert "mallory" in entry["stale_holder"]
    assert not (lock_dir / f"{name}.lock").exists()


def test_outside_the_change_window_needs_an_audited_override(cli, fleet):
    window = "2026-01-01T00:00Z/2026-01-01T01:00Z"
    plan = cli("plan", "-i", str(fleet.inventory), "-m", str(fleet.manifest), "--window", window)
    assert plan.returncode == 0, plan.stderr
    (run_dir,) = cli.run_dirs()
    assert cli("approve", str(run_dir / "plan.yml"), "--approver", "alice").returncode == 0
    refused = cli("run", str(run_dir / "plan.yml"))
    assert refused.returncode == 3 and "outside the change window" in refused.stderr
    assert fleet.live("web1") == f"./releases/{fleet.bad}"
    done = cli("run", str(run_dir / "plan.yml"), "--override-window", "incident 4711, CAB informed")
    assert done.returncode == 0, done.stdout + done.stderr
    override = next(e for e in audit_events(run_dir) if e["event"] == "window.override")
    assert override["reason"] == "incident 4711, CAB informed"
    rep = report(run_dir)
    assert rep["window"]["ended_outside"] is True
    bad = cli("plan", "-i", str(fleet.inventory), "-m", str(fleet.manifest), "--window", "tomorrow")
    assert bad.returncode == 2 and "ISO 8601" in bad.stderr


def test_separation_of_duties_refuses_self_approval_unless_break_glass(cli, fleet):
    env_user = {**os.environ, "USER": "alice"}
    plan = subprocess.run(
        [
            CLI_PATH,
            "--runs-dir",
            str(cli.runs),
            "plan",
            "-i",
            str(fleet.inventory),
            "-m",
            str(fleet.manifest),
            "--separation-of-duties",
        ],
        env=env_user,
        capture_output=True,
        text=True,
        cwd=cli.cwd,
        timeout=300,
    )
    assert plan.returncode == 0, plan.stderr
    (run_dir,) = cli.run_dirs()
    self_approval = cli("approve", str(run_dir / "plan.yml"), "--approver", "alice")
    assert self_approval.returncode == 3 and "separation of duties" in self_approval.stderr
    glass = cli("approve", str(run_dir / "plan.yml"), "--approver", "alice", "--break-glass", "on-call alone at 3am")
    assert glass.returncode == 0 and "BREAK-GLASS" in glass.stdout
    assert cli("run", str(run_dir / "plan.yml")).returncode == 0
    assert "BREAK-GLASS self-approval:** on-call alone at 3am" in (run_dir / "report.md").read_text()


def test_resume_with_limit_finishes_just_the_failed_hosts(cli, fleet):
    server = fleet.app_root("web2") / "releases" / fleet.good / "server.py"
    good_code = server.read_text()
    server.write_text("raise SystemExit('no config')\n")
    proc = cli("run", "-i", str(fleet.inventory), "-m", str(fleet.manifest), "--approver", "alice", "--yes")
    assert proc.returncode == 5
    (run_dir,) = cli.run_dirs()
    hosts = report(run_dir)["steps"][2]["hosts"]
    assert hosts["web2"]["status"] == "failed" and hosts["web1"]["status"] == "ok"
    web1_pid = (fleet.hosts["web1"] / "run" / "app.pid").read_text()
    server.write_text(good_code)
    resumed = cli("resume", str(run_dir), "--limit", "web2")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert (fleet.hosts["web1"] / "run" / "app.pid").read_text() == web1_pid  # web1 was left alone
    assert_rolled_back(fleet)
    code = report(run_dir)["steps"][2]
    assert code["status"] == "ok" and set(code["hosts"]) == set(fleet.hosts)


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--target", "../../etc"], "is not a release name"),
        (["--target", "1.0;reboot"], "is not a release name"),
        (["--target", "a\nb"], "is not a release name"),
        (["--target", "9" * 500], "is not a release name"),
        (["--scope", "everything"], "Invalid value for '--scope'"),
    ],
)
def test_hostile_arguments_exit_2_and_change_nothing(cli, fleet, args, fragment):
    before = fleet_state(fleet)
    proc = cli("plan", "-i", str(fleet.inventory), "-m", str(fleet.manifest), *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert fragment in proc.stderr
    assert fleet_state(fleet) == before
    assert cli.run_dirs() == [] or all(not (d / "plan.yml").exists() for d in cli.run_dirs())


@pytest.mark.parametrize(
    "change,fragment",
    [
        (lambda m: m["flags"].update(names=["../../etc/shadow"]), "is not a flag key"),
        (lambda m: m.update(version="2026\nrm -rf /"), "is not a release name"),
        (lambda m: m["flags"].update(backend="telepathy"), "flags.backend"),
        (lambda m: m["database"].update(config="../alembic.ini"), "absolute path"),
        (lambda m: m["infrastructure"].update(path="/etc/../../root/.ssh/authorized_keys"), "must not contain '..'"),
        (lambda m: m.update(stages=["format_disk"]), "unknown manifest key"),
        (lambda m: m["validation"].update(retries=10**9), "validation.retries"),
        (lambda m: m.update(reason="x" * 5000), "at most 2000 characters"),
    ],
)
def test_hostile_manifests_exit_2_with_one_sentence_and_change_nothing(cli, fleet, change, fragment):
    from helpers import edit_manifest

    before = fleet_state(fleet)
    edit_manifest(fleet, change)
    proc = cli("run", "-i", str(fleet.inventory), "-m", str(fleet.manifest), "--approver", "alice", "--yes")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert fragment in proc.stderr and proc.stderr.count("\n") == 1
    assert fleet_state(fleet) == before
