"""The AWX workflow of awx/workflow.yml, played node by node against a real fleet.

No AWX runs here, so the test does what AWX does with the definition: it walks the nodes from
assess, runs each job template's playbook as its own ansible-runner job with the workflow's
variables, the survey defaults and every set_stats artifact published so far, follows the
success/failure/always edges by the job's outcome, and decides the approval nodes.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import yaml
from release_rollback.runner import run_stage

ROOT = Path(__file__).resolve().parents[2]
DEFINITION = yaml.safe_load((ROOT / "awx" / "workflow.yml").read_text())
TEMPLATES = {t["name"]: t for t in DEFINITION["rollback_awx_job_templates"]}
NODES = {n["identifier"]: n for n in DEFINITION["rollback_awx_workflow"]["nodes"]}


def play_workflow(fleet, workflow_vars: dict, denied: set[str], events: Path) -> tuple[list[tuple[str, bool]], dict]:
    """Run the workflow; return the nodes in order with their outcome, and the artifacts."""
    artifacts: dict = {}
    ran: list[tuple[str, bool]] = []
    pending = ["assess"]
    while pending:
        ident = pending.pop(0)
        node = NODES[ident]
        ujt = node["unified_job_template"]
        if ujt["type"] == "workflow_approval":
            ok = ident not in denied
        else:
            template = TEMPLATES[ujt["name"]]
            survey = {q["variable"]: q["default"] for q in template["survey"] if "default" in q}
            # AWX's precedence: survey defaults < artifacts of earlier nodes < the workflow's variables.
            extravars = {**survey, **artifacts, **workflow_vars}
            job = run_stage(
                Path(template["playbook"]).stem,
                str(fleet.inventory),
                extravars,
                events / f"{ident}.jsonl",
                threading.Event(),
            )
            ok = job.status == "successful"
            artifacts.update(job.stats)
        ran.append((ident, ok))
        related = node["related"]
        for edge in (related["success_nodes"] if ok else related["failure_nodes"]) + related["always_nodes"]:
            if edge["identifier"] not in pending:
                pending.append(edge["identifier"])
    return ran, artifacts


@pytest.mark.parametrize("denied", [(), ("database_approval",)], ids=["approved", "database_denied"])
def test_awx_workflow_rolls_the_fleet_back_with_artifacts_between_nodes(fleet, tmp_path, denied):
    manifest = yaml.safe_load(fleet.manifest.read_text())
    run_dir = tmp_path / "run"
    workflow_vars = {
        **manifest,  # pasted into the workflow's launch variables
        "rollback_approved_by": "alice",  # the workflow survey's approver of record
        "rollback_approval_reason": "checkout errors",
        "rollback_run_dir": str(run_dir),
    }
    events = tmp_path / "events"
    events.mkdir()
    ran, artifacts = play_workflow(fleet, workflow_vars, set(denied), events)

    assert artifacts["rollback_approval"]["approver"] == "alice"
    assert artifacts["rollback_approval"]["plan_hash"] == artifacts["rollback_plan"]["hash"]
    report = json.loads((run_dir / "report.json").read_text())
    statuses = {s["stage"]: s["status"] for s in report["steps"]}
    assert all(fleet.live(h) == f"./releases/{fleet.good}" for h in fleet.hosts)
    assert fleet.flag()["defaultVariant"] == "off" and fleet.lb_release() == fleet.good
    if not denied:
        assert [i for i, _ in ran] == [
            "assess",
            "plan_approval",
            "record_approval",
            "feature_flags",
            "code_config",
            "database_approval",
            "database",
            "infrastructure",
            "validate",
            "report",
        ]
        assert all(ok for _, ok in ran)
        assert fleet.db_revision() == "a1"
        assert report["exit_state"] == "completed" and set(statuses.values()) == {"ok"}
    else:
        assert "database" not in [i for i, _ in ran]
        assert ("database_approval", False) in ran and ran[-1] == ("report", True)
        assert fleet.db_revision() == "b2"  # never migrated without the approval
        assert report["exit_state"] == "partially completed"
        assert "database: not run" in report["known_limitations"]
