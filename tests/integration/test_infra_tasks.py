"""The infrastructure stage running a revert tasks file from the user's repository with the plan's context."""

from __future__ import annotations

import json

import pytest
import yaml
from infra_services import infra_manifest
from release_rollback.demo import BAD, GOOD

pytestmark = pytest.mark.integration


def tasks_file(path, tasks: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("---\n" + yaml.safe_dump(tasks, sort_keys=False))


def test_revert_tasks_run_with_the_plan_context(cli, fleet, tmp_path):
    repo = tmp_path / "repo" / "rollback"
    out = tmp_path / "dns-record.json"
    tasks_file(
        repo / f"{GOOD}.yml",
        [
            {
                "name": "Point the DNS record back (the user's own revert)",
                "ansible.builtin.copy": {
                    "dest": str(out),
                    "mode": "0644",
                    "content": "{{ {'from': rollback_from_version, 'to': rollback_to_version, "
                    "'hosts': rollback_app_hosts, 'on': inventory_hostname} | to_json }}",
                },
            }
        ],
    )
    section = {"kind": "tasks", "file": str(repo / "{version}.yml")}
    manifest = infra_manifest(fleet, section, tmp_path / "manifest.yml")

    proc = cli(
        "run", "-i", str(fleet.inventory), "-m", str(manifest), "--scope", "infrastructure",
        "--approver", "alice", "--yes", "--json",
    )  # fmt: skip

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(out.read_text()) == {"from": BAD, "to": GOOD, "hosts": ["web1", "web2", "web3"], "on": "lb1"}
    state = json.loads((cli.run_dirs()[-1] / "state.json").read_text())
    assert state["stages"]["infrastructure"]["result"]["infrastructure"]["path"] == str(repo / f"{GOOD}.yml")


def test_failed_revert_tasks_are_documented_and_validation_still_runs(cli, fleet, tmp_path):
    repo = tmp_path / "repo" / "rollback"
    tasks_file(
        repo / f"{GOOD}.yml",
        [{"name": "Scale the canary pool down", "ansible.builtin.fail": {"msg": "the cloud API refused: quota"}}],
    )
    doc = yaml.safe_load(fleet.manifest.read_text())
    doc["rollback_manifest"]["infrastructure"] = {"kind": "tasks", "file": str(repo / "{version}.yml")}
    manifest = tmp_path / "manifest.yml"
    manifest.write_text(yaml.safe_dump(doc))

    proc = cli("run", "-i", str(fleet.inventory), "-m", str(manifest), "--approver", "alice", "--yes", "--json")

    assert proc.returncode == 5, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    assert out["exit_state"] == "partially completed"
    assert out["stages"]["infrastructure"] == "failed"
    assert out["stages"]["validate"] == "ok"  # the run went on to validation
    assert out["stages"]["code_config"] == "ok"
    assert any(item.startswith("infrastructure:") and "quota" in item for item in out["known_limitations"])
    run_dir = cli.run_dirs()[-1]
    report = (run_dir / "report.md").read_text()
    assert "the cloud API refused: quota" in report

    # Mitigation: the quota is raised (the revert now succeeds); resume re-runs the infrastructure, and
    # validation runs again because the infrastructure changed after it had passed.
    done = tmp_path / "scaled-down"
    tasks_file(
        repo / f"{GOOD}.yml",
        [{"name": "Scale the canary pool down", "ansible.builtin.file": {"path": str(done), "state": "touch"}}],
    )
    before = json.loads((run_dir / "state.json").read_text())["stages"]
    proc = cli("resume", str(run_dir), "--json")

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["exit_state"] == "completed"
    assert done.exists()
    after = json.loads((run_dir / "state.json").read_text())["stages"]
    assert after["code_config"]["result"] == before["code_config"]["result"]  # not run again
    assert after["validate"]["result"]["started"] >= after["infrastructure"]["result"]["ended"]
    assert after["validate"]["result"]["status"] == "ok"
