"""The walking skeleton through the CLI and the real playbooks, against a real local fleet.

Every failure rule of the stage table is driven by a real failure: an immutable flags file, an
application that will not start, a migration whose downgrade raises, an invalid load-balancer
config, a smoke check that answers 404, a host with no previous release.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from helpers import edit_manifest, fleet_state, report, run, statuses, version_of

CLI_PATH = str(Path(sys.executable).parent / "release-rollback")


def assert_every_stage_rolled_back(cli, fleet, approver: str) -> None:
    """A completed rollback: every host, the database, the flags and the load balancer on the good
    release, user data and the other flag untouched, every stage ok, the run's files and jobs."""
    for host in fleet.hosts:
        assert fleet.live(host) == f"./releases/{fleet.good}"
        assert version_of(fleet, host) == fleet.good
        assert (fleet.app_root(host) / "releases" / fleet.bad / "ROLLED_BACK").is_file()
        assert (fleet.app_root(host) / "shared" / "uploads.txt").read_text().startswith("user data")
        assert "checkout = classic" in (fleet.hosts[host] / "etc" / "app.conf").read_text()
    assert fleet.db_revision() == "a1"
    flag = fleet.flag()
    assert flag["defaultVariant"] == "off" and "targeting" not in flag
    assert fleet.flag("dark-mode")["defaultVariant"] == "on"
    assert fleet.lb_release() == fleet.good
    (run_dir,) = cli.run_dirs()
    rep = report(run_dir)
    assert rep["exit_state"] == "completed"
    assert set(statuses(run_dir).values()) == {"ok"}
    assert rep["approval"]["approver"] == approver
    assert rep["flags"]["new-checkout"]["before"]["off"] is False
    assert rep["database"]["current"] == "a1"
    for name in ("plan.yml", "state.json", "audit.jsonl", "report.md", "approval.json"):
        assert (run_dir / name).is_file(), name
    # Assess is one ansible-playbook job; feature_flags to validate are one more, whose events are
    # split by stage: the job starts in the first stage's file and ends in the last one's.
    kinds = {}
    for stage in ("assess", "feature_flags", "code_config", "database", "infrastructure", "validate"):
        events = [json.loads(e) for e in (run_dir / "events" / f"{stage}.jsonl").read_text().splitlines()]
        kinds[stage] = {e["event"] for e in events}
        plays = [e["play"] for e in events if e["event"] == "playbook_on_play_start"]
        assert plays[0].startswith(f"Stage {stage}:"), (stage, plays)
        assert not [p for p in plays if p.startswith("Stage ") and not p.startswith(f"Stage {stage}:")], plays
    assert [s for s in kinds if "playbook_on_start" in kinds[s]] == ["assess", "feature_flags"]
    assert [s for s in kinds if "playbook_on_stats" in kinds[s]] == ["assess", "validate"]
    # The report is written on the controller: the driver does the report stage itself, no playbook.
    state = json.loads((run_dir / "state.json").read_text())
    for stage in ("feature_flags", "code_config", "database", "infrastructure", "validate"):
        job = state["stages"][stage]["job"]
        assert job == f"{run_dir.name}:execute" and state["stages"][stage]["runner_status"] == "successful"
    assert state["stages"]["assess"]["job"] == f"{run_dir.name}:assess"
    assert state["stages"]["report"]["runner_status"] == "in-process"
    assert state["stages"]["report"]["result"]["hosts"]["localhost"]["exit_state"] == "completed"
    assert not (run_dir / "events" / "report.jsonl").exists()
    record = [json.loads(line) for line in (cli.runs.parent / "releases.jsonl").read_text().splitlines()]
    assert record[-1]["version"] == fleet.bad and record[-1]["status"] == "rolled_back"
    verify = cli("audit", "verify", str(run_dir))
    assert verify.returncode == 0, verify.stderr


def test_flag_system_unavailable_goes_on_to_code_and_ends_partially_completed(cli, fleet, need):
    need(
        subprocess.run(["chattr", "+i", str(fleet.flags)], capture_output=True).returncode == 0,
        "chattr +i (an ext4 filesystem and root)",
    )
    before = fleet.flags.read_bytes()
    proc = run(cli, fleet)
    assert proc.returncode == 5, proc.stdout + proc.stderr
    (run_dir,) = cli.run_dirs()
    st = statuses(run_dir)
    assert st["feature_flags"] == "unavailable"
    assert st["code_config"] == "ok" and st["validate"] == "ok"
    assert fleet.flags.read_bytes() == before
    assert all(fleet.live(h) == f"./releases/{fleet.good}" for h in fleet.hosts)
    limits = " ".join(report(run_dir)["known_limitations"])
    assert "flags left on: new-checkout" in limits


def test_code_failure_halts_before_database_and_infrastructure(cli, fleet):
    # The previous release on web2 cannot start: its server crashes at import.
    server = fleet.app_root("web2") / "releases" / fleet.good / "server.py"
    server.write_text("raise SystemExit('config error: cannot bind')\n")
    proc = run(cli, fleet)
    assert proc.returncode == 5, proc.stdout + proc.stderr
    (run_dir,) = cli.run_dirs()
    st = statuses(run_dir)
    assert st["code_config"] == "failed"
    assert st["database"] == "skipped" and st["infrastructure"] == "skipped" and st["validate"] == "skipped"
    assert st["report"] == "ok"
    assert fleet.db_revision() == "b2"
    assert fleet.lb_release() == fleet.bad
    rep = report(run_dir)
    assert rep["host_releases"]["web2"] == fleet.good  # switched but not healthy: named, not hidden
    assert "web2" in next(s for s in rep["steps"] if s["stage"] == "code_config")["summary"]
    assert any("resume" in n for n in rep["next_steps"])


def test_database_failure_goes_on_to_infrastructure_and_validation(cli, fleet):
    migration = fleet.app_root("web1") / "releases" / fleet.bad / "migrations" / "versions" / "b2_orders_index.py"
    migration.write_text(
        migration.read_text().replace(
            'op.drop_index("ix_orders_created_at", table_name="orders")',
            'op.execute("SELECT no_such_column FROM orders")',  # fails when it runs, unlike a raise the plan sees
        )
    )
    proc = run(cli, fleet)
    assert proc.returncode == 5, proc.stdout + proc.stderr
    (run_dir,) = cli.run_dirs()
    st = statuses(run_dir)
    assert st["database"] == "failed"
    assert st["infrastructure"] == "ok" and st["validate"] == "ok"
    assert fleet.db_revision() == "b2"
    assert report(run_dir)["database"]["current"] == "b2"
    assert fleet.lb_release() == fleet.good


def test_invalid_infrastructure_config_is_refused_and_validation_still_runs(cli, fleet):
    snapshot = fleet.lb / "releases" / f"{fleet.good}.conf"
    snapshot.write_text(f"# release {fleet.good}\nupstream app {{\n    server nowhere;\n}}\n")
    live_before = (fleet.lb / "upstreams.conf").read_bytes()
    proc = run(cli, fleet)
    assert proc.returncode == 5, proc.stdout + proc.stderr
    (run_dir,) = cli.run_dirs()
    st = statuses(run_dir)
    assert st["infrastructure"] == "failed" and st["validate"] == "ok"
    assert (fleet.lb / "upstreams.conf").read_bytes() == live_before
    summary = next(s for s in report(run_dir)["steps"] if s["stage"] == "infrastructure")["summary"]
    assert "failed validation" in summary


def test_failed_validation_ends_partially_completed(cli, fleet):
    port = fleet.ports["web1"]
    edit_manifest(fleet, lambda m: m["validation"].update(smoke=[{"url": f"http://127.0.0.1:{port}/checkout"}]))
    proc = run(cli, fleet)
    assert proc.returncode == 5, proc.stdout + proc.stderr
    (run_dir,) = cli.run_dirs()
    assert statuses(run_dir)["validate"] == "failed"
    assert all(fleet.live(h) == f"./releases/{fleet.good}" for h in fleet.hosts)


def test_no_previous_release_is_blocked_with_the_remediation(cli, tmp_path):
    from release_rollback.demo import BAD, build_fleet

    single = build_fleet(tmp_path / "single", 2, releases=(BAD,))
    try:
        before = fleet_state(single)
        proc = cli("run", "-i", str(single.inventory), "-m", str(single.manifest), "--approver", "alice", "--yes")
        assert proc.returncode == 3, proc.stdout + proc.stderr
        assert "last known-good release" in proc.stderr
        assert fleet_state(single) == before
    finally:
        single.stop()


def test_no_approval_and_no_terminal_is_blocked_and_changes_nothing(cli, fleet):
    before = fleet_state(fleet)
    proc = cli("run", "-i", str(fleet.inventory), "-m", str(fleet.manifest))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "not approved" in proc.stderr and "--approver NAME --yes" in proc.stderr
    assert fleet_state(fleet) == before


def test_malformed_manifest_exits_2_with_one_sentence_and_changes_nothing(cli, fleet, tmp_path):
    before = fleet_state(fleet)
    bad = tmp_path / "bad.yml"
    bad.write_text("rollback_manifest:\n  version: [unclosed\n")
    proc = cli("run", "-i", str(fleet.inventory), "-m", str(bad), "--approver", "alice", "--yes")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "is not valid YAML at line" in proc.stderr
    bad.write_text("rollback_manifest:\n  version: ../../etc/passwd\n")
    proc = cli("plan", "-i", str(fleet.inventory), "-m", str(bad))
    assert proc.returncode == 2 and "is not a release name" in proc.stderr
    assert fleet_state(fleet) == before


def test_an_approval_does_not_survive_an_edited_plan(cli, fleet):
    proc = cli("plan", "-i", str(fleet.inventory), "-m", str(fleet.manifest))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run_dir,) = cli.run_dirs()
    plan_file = run_dir / "plan.yml"
    assert cli("approve", str(plan_file), "--approver", "alice").returncode == 0
    before = fleet_state(fleet)
    plan = yaml.safe_load(plan_file.read_text())
    plan["scope"] = ["code_config"]  # someone narrows the plan after it was approved
    plan_file.write_text(yaml.safe_dump(plan))
    proc = cli("run", str(plan_file))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "edited" in proc.stderr
    assert cli("approve", str(plan_file), "--approver", "bob").returncode == 2
    assert fleet_state(fleet) == before


def test_resume_after_a_code_failure_continues_from_that_stage(cli, fleet):
    server = fleet.app_root("web3") / "releases" / fleet.good / "server.py"
    good_code = server.read_text()
    server.write_text("raise SystemExit('missing dependency')\n")
    assert run(cli, fleet).returncode == 5
    (run_dir,) = cli.run_dirs()
    server.write_text(good_code)  # the operator fixes the cause
    proc = cli("resume", str(run_dir))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert set(statuses(run_dir).values()) == {"ok"}
    audit = [json.loads(line) for line in (run_dir / "audit.jsonl").read_text().splitlines()]
    after_resume = audit[next(i for i, e in enumerate(audit) if e["event"] == "run.resumed") :]
    started = [e["stage"] for e in after_resume if e["event"] == "stage.start"]
    assert started[0] == "code_config" and "feature_flags" not in started
    assert fleet.db_revision() == "a1" and version_of(fleet, "web3") == fleet.good


def test_audit_verify_names_an_edited_line(cli, fleet):
    assert cli("plan", "-i", str(fleet.inventory), "-m", str(fleet.manifest)).returncode == 0
    (run_dir,) = cli.run_dirs()
    trail = run_dir / "audit.jsonl"
    rows = trail.read_text().splitlines()
    entry = json.loads(rows[1])
    entry["stage"] = "something else"
    rows[1] = json.dumps(entry)
    trail.write_text("\n".join(rows) + "\n")
    proc = cli("audit", "verify", str(run_dir))
    assert proc.returncode == 1 and "line 2" in proc.stderr


def test_on_a_terminal_run_shows_the_plan_asks_for_the_approver_and_rolls_every_stage_back(cli, fleet):
    import pty
    import select
    import time

    pid, fd = pty.fork()
    if pid == 0:  # the child: the CLI on a terminal
        os.chdir(cli.cwd)
        os.execv(
            CLI_PATH,
            [CLI_PATH, "--runs-dir", str(cli.runs), "run", "-i", str(fleet.inventory), "-m", str(fleet.manifest)],
        )
    out = b""
    answered = False
    deadline = time.monotonic() + 300
    status = None
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            out += chunk
            if not answered and b"approver's name" in out:
                os.write(fd, b"carol\r")
                answered = True
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
    if status is None or not os.WIFEXITED(status):
        _, status = os.waitpid(pid, 0)
    text = out.decode(errors="replace")
    assert answered, text[-2000:]
    assert "BLOCKER" not in text and f"live {fleet.bad}  ->  {fleet.good}" in text
    assert os.WEXITSTATUS(status) == 0, text[-3000:]
    assert "Exit state: completed" in text
    assert_every_stage_rolled_back(cli, fleet, approver="carol")


def test_json_output_is_one_document_for_pipelines(cli, fleet):
    proc = run(cli, fleet, "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["exit_state"] == "completed" and doc["exit_code"] == 0
    assert doc["stages"]["code_config"] == "ok"
