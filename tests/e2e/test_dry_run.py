"""A dry run, two ways: ``ansible-playbook rollback.yml --check --diff`` and ``release-rollback run PLAN --check``.

Both go through the real stages against a real fleet, show what each layer would change (link,
configuration, flags, database, load balancer), write a report titled as a dry run in
``<run dir>/dry-run/``, and leave every file of the fleet (content, mode and mtime) and the database
revision as they were. The driver's dry run does not consume the plan: it can still be approved and
run for real. What a dry run cannot be given, and the runs it cannot be given to, are refused.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from helpers import assert_rolled_back, audit_events, edit_manifest, fleet_state
from release_rollback.demo import BAD, GOOD, build_fleet
from replay import ReplayServer
from treestate import SERVICE_FILES, changes, tree_state

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def assert_layer_diffs(out: str, fleet) -> None:
    """A diff for every layer the rollback changes."""
    assert '-      "defaultVariant": "on",' in out and '+      "defaultVariant": "off"' in out  # the flag
    for host, host_dir in fleet.hosts.items():
        assert f"--- before: {fleet.app_root(host)}/current" in out  # the link, per host
        assert f"--- before: {host_dir}/etc/app.conf (live)" in out  # the configuration, per host
    assert f"+-> ./releases/{GOOD}" in out and f"--> ./releases/{BAD}" in out
    assert "-checkout = new" in out and "+checkout = classic" in out
    assert "-revision b2" in out and "+revision a1" in out  # the database
    assert f"-# release {BAD}" in out and f"+# release {GOOD}" in out  # the load balancer's upstreams


def assert_dry_run_report(dry: Path) -> dict:
    rep = json.loads((dry / "report.json").read_text())
    assert rep["dry_run"] is True and rep["exit_state"] == "completed"
    assert rep["release_record"]["status"] == "not rolled back (dry run)"
    assert rep["release_record"]["known_bad"] is False
    md = (dry / "report.md").read_text()
    assert md.startswith("# DRY RUN, nothing changed: Rollback report")
    assert "nothing was changed; the release is not rolled back" in md
    assert "DRY RUN, nothing changed" in (dry / "report.html").read_text()
    done = {s["stage"]: s["done"] for s in rep["steps"]}
    assert done["code_config"].startswith("dry run: would switch")
    assert done["database"] == "dry run: would back up, then run 1 down step(s) with alembic: b2 -> a1"
    return rep


def test_rollback_yml_check_diff_shows_every_layer_writes_a_dry_run_report_and_changes_nothing(fleet, tmp_path):
    run_dir = tmp_path / "run"
    record = tmp_path / "releases.jsonl"
    # Releases as a deploy leaves them, without bytecode (the fleet builder's Alembic may have written
    # some): reading the migration scripts must not add any.
    for cache in fleet.root.glob("hosts/*/app/releases/*/migrations/**/__pycache__"):
        shutil.rmtree(cache)
    before, state, revision = tree_state(fleet.root), fleet_state(fleet), fleet.db_revision()

    proc = subprocess.run(
        [
            "ansible-playbook",
            "-i",
            str(fleet.inventory),
            str(ROOT / "playbooks" / "rollback.yml"),
            "-e",
            f"@{fleet.manifest}",
            "-e",
            f"rollback_run_dir={run_dir}",
            "-e",
            f"rollback_release_record={record}",
            "-e",
            "rollback_approved_by=alice",
            "--check",
            "--diff",
        ],
        cwd=ROOT,
        env=dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1"),
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert proc.returncode == 0, proc.stdout[-5000:]
    assert "fatal:" not in proc.stdout, proc.stdout[-5000:]
    assert_layer_diffs(proc.stdout, fleet)
    assert changes(before, tree_state(fleet.root)) == []
    assert fleet_state(fleet) == state and fleet.db_revision() == revision == "b2"
    # The dry run's report, and nothing else: no real report, no release record, no audit trail.
    assert sorted(p.name for p in run_dir.iterdir()) == ["dry-run"]
    assert sorted(p.name for p in (run_dir / "dry-run").iterdir()) == ["report.html", "report.json", "report.md"]
    assert not record.exists()
    assert_dry_run_report(run_dir / "dry-run")


@pytest.fixture
def hook():
    """A notification webhook that records what reaches it."""
    server = ReplayServer().start()
    server.answer("/hooks/rollback", (204, "text/plain", ""))
    yield server
    server.stop()


def test_run_check_changes_nothing_and_the_plan_can_still_be_approved_and_run(cli, fleet, hook):
    channel = {"kind": "webhook", "url": hook.url + "/hooks/rollback"}
    edit_manifest(fleet, lambda m: m.update(notify={"channels": [channel]}))
    planned = cli("plan", "-i", str(fleet.inventory), "-m", str(fleet.manifest))
    assert planned.returncode == 0, planned.stdout + planned.stderr
    (run_dir,) = cli.run_dirs()
    plan = run_dir / "plan.yml"
    before, state, plan_text = tree_state(fleet.root), fleet_state(fleet), plan.read_text()
    trail_before = len(audit_events(run_dir))

    dry = cli("run", str(plan), "--check")

    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert_layer_diffs(dry.stdout, fleet)
    assert "DRY RUN (--check): nothing was changed. A real run of this plan would end completed." in dry.stdout
    assert changes(before, tree_state(fleet.root)) == []
    assert fleet_state(fleet) == state and fleet.db_revision() == "b2"
    # The plan is not consumed: still planned, unapproved, the same plan; no report of the run's own.
    assert json.loads((run_dir / "state.json").read_text())["lifecycle"]["state"] == "planned"
    assert plan.read_text() == plan_text and not (run_dir / "approval.json").exists()
    assert not (run_dir / "report.md").exists() and not (run_dir.parent.parent / "releases.jsonl").exists()
    assert [e["event"] for e in audit_events(run_dir)[trail_before:]] == ["dry_run.start", "dry_run.end"]
    assert audit_events(run_dir)[-1]["exit_state"] == "completed"
    assert cli("audit", "verify", str(run_dir)).returncode == 0
    assert hook.requests == [], "a dry run notified the stakeholders"
    assert_dry_run_report(run_dir / "dry-run")
    # The diffs were shown, and not kept: a configuration file's diff may hold what the file holds.
    kept = [p for p in run_dir.rglob("*") if p.is_file() and "+checkout = classic" in p.read_text(errors="replace")]
    assert kept == []

    # ... and the plan is approved and run for real afterwards.
    assert cli("approve", str(plan), "--approver", "bob").returncode == 0
    real = cli("run", str(plan))
    assert real.returncode == 0, real.stdout + real.stderr
    assert_rolled_back(fleet)
    assert json.loads((run_dir / "report.json").read_text()).get("dry_run") is None
    assert hook.requests, "the real run notifies (so the dry run's silence above means something)"

    # A completed run takes no dry run: exit 3, and what to do instead, ready to paste.
    again = cli("run", str(plan), "--check")
    assert again.returncode == 3, again.stdout + again.stderr
    assert f"run {run_dir.name} is completed" in again.stderr
    assert f'`release-rollback signoff {run_dir} --by "$USER"`' in again.stderr
    assert f"`release-rollback plan -i {fleet.inventory} -m {fleet.manifest}`" in again.stderr


@pytest.mark.parametrize("options", [["--approver", "alice"], ["--yes"], ["--break-lock"], ["--override-window", "x"]])
def test_check_with_an_approval_or_lock_option_is_refused_with_exit_2(cli, tmp_path, options):
    inventory, manifest = tmp_path / "inventory.yml", tmp_path / "manifest.yml"
    inventory.write_text("app:\n  hosts: {}\n")
    manifest.write_text("rollback_manifest:\n  app: shop\n  reason: test\n")

    proc = cli("run", "-i", str(inventory), "-m", str(manifest), "--check", *options)

    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip() == (
        f"release-rollback: --check is a dry run that changes nothing and needs no approval, so it does not take "
        f"{options[0]}: drop it, or leave out --check to roll back for real"
    )
    assert not cli.run_dirs()


def test_check_is_refused_for_a_changed_manifest_an_aborted_and_a_running_run(cli, tmp_path):
    fleet = build_fleet(tmp_path / "fleet", 1, start=False)
    assert cli("plan", "-i", str(fleet.inventory), "-m", str(fleet.manifest)).returncode == 0
    (run_dir,) = cli.run_dirs()
    plan = str(run_dir / "plan.yml")
    fleet_files = (*SERVICE_FILES, "manifest.yml")  # the test edits the manifest itself
    before = tree_state(fleet.root, fleet_files)

    # A manifest changed since the plan: the plan no longer says what would run.
    original = fleet.manifest.read_text()
    edit_manifest(fleet, lambda m: m.update(reason="something else"))
    changed = cli("run", plan, "--check")
    assert changed.returncode == 3, changed.stdout + changed.stderr
    assert "the release manifest changed after the plan was made" in changed.stderr
    fleet.manifest.write_text(original)

    # A run recorded as running (a live driver: this test's own process).
    state_file = run_dir / "state.json"
    saved = state_file.read_text()
    doc = json.loads(saved)
    doc["lifecycle"] = {"state": "running", "pid": os.getpid(), "host": socket.gethostname(), "since": "now"}
    state_file.write_text(json.dumps(doc))
    running = cli("run", plan, "--check")
    assert running.returncode == 3, running.stdout + running.stderr
    assert f"run {run_dir.name} is running" in running.stderr and f"`kill -TERM {os.getpid()}`" in running.stderr
    state_file.write_text(saved)

    # Another dry run of the same plan still running (its driver alive): refused, not replaced under it.
    (run_dir / "dry-run").mkdir()
    (run_dir / "dry-run" / "state.json").write_text(json.dumps({"lifecycle": doc["lifecycle"]}))
    second = cli("run", plan, "--check")
    assert second.returncode == 3, second.stdout + second.stderr
    assert f"a dry run of run {run_dir.name} is running now (driver pid {os.getpid()})" in second.stderr
    assert (run_dir / "dry-run" / "state.json").is_file()
    (run_dir / "dry-run" / "state.json").unlink()
    (run_dir / "dry-run").rmdir()

    assert cli("abort", str(run_dir), "--reason", "test").returncode == 4  # exit code of an aborted run
    aborted = cli("run", plan, "--check")
    assert aborted.returncode == 3, aborted.stdout + aborted.stderr
    assert f"run {run_dir.name} is aborted" in aborted.stderr
    assert f"`release-rollback plan -i {fleet.inventory} -m {fleet.manifest}`" in aborted.stderr
    assert not (run_dir / "dry-run").exists()
    assert changes(before, tree_state(fleet.root, fleet_files)) == []


def test_a_dry_run_outside_the_change_window_runs_and_says_a_real_run_would_be_refused(cli, tmp_path):
    fleet = build_fleet(tmp_path / "fleet", 1, start=False)
    window = "2020-01-01T00:00Z/2020-01-01T01:00Z"
    assert cli("plan", "-i", str(fleet.inventory), "-m", str(fleet.manifest), "--window", window).returncode == 0
    (run_dir,) = cli.run_dirs()

    dry = cli("run", str(run_dir / "plan.yml"), "--check")

    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "outside the plan's change window 2020-01-01T00:00:00Z - 2020-01-01T01:00:00Z" in dry.stdout
    assert "a real run now would be refused unless given --override-window REASON" in dry.stdout
    start = next(e for e in audit_events(run_dir) if e["event"] == "dry_run.start")
    assert start["outside_window"] is True
    real = cli("run", str(run_dir / "plan.yml"), "--approver", "alice", "--yes")
    assert real.returncode == 3 and "outside the change window" in real.stderr, real.stdout + real.stderr
