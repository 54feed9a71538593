"""The controller's release record: a release rolled back once is never a rollback target again.

Hosts carry a ROLLED_BACK mark in the release directory; the controller keeps releases.jsonl next
to the runs directory. These tests show the plan honouring the controller's record even where the
host has no mark (e.g. another environment rolled the release back).
"""

from __future__ import annotations

import json

import pytest
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
