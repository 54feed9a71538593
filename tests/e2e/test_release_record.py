"""The controller's release record: a release rolled back once is never a rollback target again.

Hosts carry a ROLLED_BACK mark in the release directory; the controller keeps releases.jsonl next
to the runs directory. These tests show the plan honouring the controller's record even where the
host has no mark (e.g. another environment rolled the release back).
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from conftest import CLI, ROOT
from release_rollback.demo import build_fleet

pytestmark = pytest.mark.e2e

OLDEST, MIDDLE, LIVE = "20261101000000Z", "20261115000000Z", "20261126081500Z"


@pytest.fixture
def three_releases(tmp_path, cli):
    fleet = build_fleet(tmp_path / "fleet3", 2, releases=(OLDEST, MIDDLE, LIVE))
    record = cli.runs.parent / "releases.jsonl"
    record.parent.mkdir(parents=True, exist_ok=True)
    entry = {"app": "demo-shop", "version": MIDDLE, "status": "rolled_back", "known_bad": True, "run_id": "run-42"}
    record.write_text(json.dumps(entry) + "\n")
    yield fleet
    fleet.stop()


def test_the_plan_passes_over_a_release_the_controller_record_marks_known_bad(three_releases, cli):
    fleet = three_releases
    planned = cli("plan", "-i", str(fleet.inventory), "-m", str(fleet.manifest), "--scope", "code_config", "--json")
    assert planned.returncode == 0, planned.stdout + planned.stderr
    plan = json.loads(planned.stdout)["plan"]
    assert plan["to_version"] == OLDEST
    assert {h["target"] for h in plan["hosts"].values()} == {OLDEST}
    assert any(f"release {MIDDLE} is recorded as rolled back (known-bad) by run run-42" in r for r in plan["risks"])


def test_an_explicit_target_on_a_known_bad_release_is_blocked(three_releases, cli):
    fleet = three_releases
    planned = cli("plan", "-i", str(fleet.inventory), "-m", str(fleet.manifest), "--target", MIDDLE)
    assert planned.returncode == 3
    assert f"target release {MIDDLE} is recorded as rolled back (known-bad) by run run-42" in planned.stderr


def test_plain_ansible_playbook_passes_over_a_release_another_controller_rolled_back_in_the_ledger(tmp_path, cli):
    """Under ansible-playbook (and AWX) the assess role reads the ledger itself: a release that controller A
    rolled back is not the target of controller B's plan, though B's own release record is empty."""
    fleet = build_fleet(tmp_path / "fleet3", 2, releases=(OLDEST, MIDDLE, LIVE))
    try:
        ledger = f"sqlite:///{tmp_path / 'team' / 'ledger.db'}"
        (tmp_path / "team").mkdir()
        controller_a = tmp_path / "controller-a"
        controller_a.mkdir()
        entry = {"app": "demo-shop", "version": MIDDLE, "status": "rolled_back", "known_bad": True, "run_id": "run-42"}
        (controller_a / "releases.jsonl").write_text(json.dumps(entry) + "\n")
        argv = [CLI, "--ledger", ledger, "ledger", "import", str(controller_a)]
        imported = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert imported.returncode == 0, imported.stdout + imported.stderr

        def assess(ledger_url: str, run: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                ["ansible-playbook", "-i", str(fleet.inventory), str(ROOT / "playbooks" / "assess.yml"),
                 "-e", f"@{fleet.manifest}", "-e", f"rollback_run_dir={tmp_path / 'controller-b' / 'runs' / run}"],
                cwd=ROOT, capture_output=True, text=True, timeout=600,
                env=dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), RELEASE_ROLLBACK_LEDGER=ledger_url),
            )  # fmt: skip

        with_ledger = assess(ledger, "r1")
        assert with_ledger.returncode == 0, with_ledger.stdout[-3000:] + with_ledger.stderr[-2000:]
        assert f"plan ready: {LIVE} -> {OLDEST}" in with_ledger.stdout, with_ledger.stdout[-3000:]
        # The same playbook without the ledger would have rolled back onto the release A found bad.
        without = assess("", "r2")
        assert without.returncode == 0, without.stdout[-3000:] + without.stderr[-2000:]
        assert f"plan ready: {LIVE} -> {MIDDLE}" in without.stdout, without.stdout[-3000:]
    finally:
        fleet.stop()
