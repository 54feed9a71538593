"""One plan, two ways: the driver and plain ``ansible-playbook playbooks/rollback.yml`` end alike.

Two identical demo fleets (same releases, same sabotage); one is rolled back by ``release-rollback
run``, the other by ``ansible-playbook``. The fleets' end states and the reports' exit states and
steps must be the same, once each fleet's own paths and ports are written as placeholders.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from release_rollback.demo import build_fleet

ROOT = Path(__file__).resolve().parents[2]


def _break_code(fleet) -> None:
    # The previous release cannot start on web2: code_config fails and halts the rollback.
    (fleet.app_root("web2") / "releases" / fleet.good / "server.py").write_text("raise SystemExit('cannot bind')\n")


SCENARIOS = {"completed": None, "code_halts": _break_code}


@pytest.fixture
def second_fleet(tmp_path):
    built = build_fleet(tmp_path / "fleet2", 3)
    yield built
    built.stop()


def _scrub(fleet, text: str) -> str:
    text = text.replace(str(fleet.root), "<FLEET>")
    for host, port in fleet.ports.items():
        text = re.sub(rf"\b{port}\b", f"<PORT:{host}>", text)
    return re.sub(r"\(pid \d+\)", "(pid N)", text)


def end_state(fleet) -> dict:
    root = fleet.root
    return {
        "links": {h: fleet.live(h) for h in fleet.hosts},
        "database_revision": fleet.db_revision(),
        "flag": fleet.flag(),
        "other_flag": fleet.flag("dark-mode"),
        "load_balancer": _scrub(fleet, (fleet.lb / "upstreams.conf").read_text()).split("\n")[0],
        "config": {h: _scrub(fleet, (d / "etc" / "app.conf").read_text()) for h, d in fleet.hosts.items()},
        "marks": sorted(str(p.relative_to(root)) for p in root.glob("hosts/*/app/releases/*/ROLLED_BACK")),
        "kept_files": sorted(str(p.relative_to(root)) for p in root.glob("hosts/*/etc/*.rolled-back-*")),
    }


def report_outline(fleet, report: dict) -> dict:
    steps = [
        {
            "stage": s["stage"],
            "status": s["status"],
            "changed": s["changed"],
            "reached": s.get("reached"),
            "summary": _scrub(fleet, str(s.get("summary"))),
            "hosts": {h: r.get("status") for h, r in (s.get("hosts") or {}).items()},
        }
        for s in report["steps"]
    ]
    # The report's line about itself: the driver rewrites report.json once the report stage has
    # ended ("ok on 1 host(s)"), the playbook writes it from inside that stage ("this report").
    # Only its status is compared.
    for step in steps:
        if step["stage"] == "report":
            step.pop("summary")
            step.pop("hosts")
    return {
        "exit_state": report["exit_state"],
        "exit_code": report["exit_code"],
        "steps": steps,
        "from_version": report["from_version"],
        "to_version": report["to_version"],
        "scope": report["scope"],
        "host_releases": report["host_releases"],
        "known_limitations": [_scrub(fleet, line) for line in report["known_limitations"]],
        "approver": report["approval"]["approver"],
    }


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_driver_and_ansible_playbook_leave_the_same_fleet_and_report(scenario, cli, fleet, second_fleet, tmp_path):
    sabotage = SCENARIOS[scenario]
    if sabotage:
        sabotage(fleet)
        sabotage(second_fleet)
    assert end_state(fleet) == end_state(second_fleet), "the two fleets must start identical"

    driver = cli("run", "-i", str(fleet.inventory), "-m", str(fleet.manifest), "--approver", "alice", "--yes")
    (run_dir,) = cli.run_dirs()
    by_driver = json.loads((run_dir / "report.json").read_text())

    def rollback_yml(run: Path, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                "ansible-playbook",
                "-i",
                str(second_fleet.inventory),
                str(ROOT / "playbooks" / "rollback.yml"),
                "-e",
                f"@{second_fleet.manifest}",
                "-e",
                f"rollback_run_dir={run}",
                *extra,
            ],
            cwd=ROOT,
            env=dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg")),
            capture_output=True,
            text=True,
            timeout=600,
        )

    if scenario == "completed":
        # Without an approver the playbook is blocked and changes nothing.
        before = end_state(second_fleet)
        blocked = rollback_yml(tmp_path / "unapproved-run")
        assert blocked.returncode != 0, blocked.stdout[-3000:]
        assert json.loads((tmp_path / "unapproved-run" / "report.json").read_text())["exit_state"] == "blocked"
        # ... and the refusal is in its audit trail, as the driver's would be.
        assert '"blocked"' in (tmp_path / "unapproved-run" / "audit.jsonl").read_text()
        assert end_state(second_fleet) == before

    playbook_run = tmp_path / "playbook-run"
    playbook = rollback_yml(playbook_run, "-e", "rollback_approved_by=alice")
    by_playbook = json.loads((playbook_run / "report.json").read_text())

    driver_outline, playbook_outline = report_outline(fleet, by_driver), report_outline(second_fleet, by_playbook)
    for key in ("exit_state", "exit_code", "from_version", "to_version", "scope", "host_releases", "approver"):
        assert driver_outline[key] == playbook_outline[key], key
    for by_d, by_p in zip(driver_outline["steps"], playbook_outline["steps"], strict=True):
        assert by_d == by_p
    for by_d, by_p in zip(driver_outline["known_limitations"], playbook_outline["known_limitations"], strict=True):
        assert by_d == by_p
    assert end_state(fleet) == end_state(second_fleet)
    expected = {"completed": "completed", "code_halts": "partially completed"}
    assert by_driver["exit_state"] == expected[scenario]
    assert driver.returncode == by_driver["exit_code"], driver.stdout + driver.stderr
    # ansible-playbook fails the job unless the rollback completed.
    assert (playbook.returncode == 0) == (scenario == "completed"), playbook.stdout[-3000:]
