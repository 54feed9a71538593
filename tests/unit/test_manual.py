"""Manual steps as data (module_utils/manual.py): their gate with each stage's failure rule, and the AWX
nodes generated for them. The CLI and the workflow are proven by tests/e2e/test_manual_steps.py and
tests/e2e/test_awx_workflow.py; these are the rules' cases that need no fleet."""

from __future__ import annotations

import pytest
import yaml
from conftest import ROOT
from release_rollback import content

manual = content.module_utils("manual")
lifecycle = content.module_utils("lifecycle")


def steps(*given):
    return manual.normalise_steps([dict({"title": t, "instructions": "do it"}, **kw) for t, kw in given])


PLAN = {
    "scope": ["code_config", "database", "infrastructure", "validate"],
    "manual_steps": steps(
        ("Purge the CDN", {"stage": "code_config", "position": "after"}),
        ("Tell the DBA", {"stage": "database", "position": "before"}),
    ),
}


def test_a_blocking_step_nobody_confirmed_stops_every_stage_after_it_and_none_before():
    assert manual.gate("code_config", PLAN, {}) is None
    for stage in ("database", "infrastructure", "validate"):
        gate = manual.gate(stage, PLAN, {})
        assert gate["stop"] and gate["waiting"] == "purge-the-cdn" and not gate["run"]
    confirmed = {"purge-the-cdn": {"status": "confirmed"}}
    assert manual.gate("database", PLAN, confirmed)["waiting"] == "tell-the-dba"
    confirmed["tell-the-dba"] = {"status": "confirmed"}
    assert manual.gate("database", PLAN, confirmed) is None


def test_a_failed_step_applies_its_stage_s_failure_rule():
    # After code_config (halt): nothing after it runs.
    failed = {"purge-the-cdn": {"status": "failed", "note": "API down"}}
    gate = manual.gate("validate", PLAN, failed)
    assert gate["run"] is False and gate["reached"] is False and "API down" in gate["reason"]
    # Before database (continue): the database stage does not run, the stages after it do.
    failed = {"purge-the-cdn": {"status": "confirmed"}, "tell-the-dba": {"status": "failed", "note": "no DBA"}}
    assert manual.gate("database", PLAN, failed)["run"] is False
    assert manual.gate("infrastructure", PLAN, failed) is None
    assert any("tell-the-dba" in g and "failed" in g for g in manual.gaps(PLAN, failed))


def test_the_waiting_step_is_the_one_after_the_stages_that_finished():
    results = {"code_config": {"status": "ok"}}
    assert manual.waiting(PLAN, {}, {}) is None  # code_config has not run: the step is not reached
    assert manual.waiting(PLAN, results, {})["id"] == "purge-the-cdn"
    assert manual.waiting(PLAN, {"code_config": {"status": "failed"}}, {}) is None


def test_bad_steps_are_refused_with_the_key_to_fix():
    with pytest.raises(ValueError, match=r"manual_steps\[0\].stage must be one of"):
        manual.normalise_steps([{"title": "x", "instructions": "y", "stage": "cdn"}])
    with pytest.raises(ValueError, match="two manual steps are named x"):
        manual.normalise_steps([{"title": "x", "instructions": "y", "stage": "validate"}] * 2)


def test_waiting_for_operator_allows_confirm_resume_and_abort_only():
    waiting = lifecycle.WAITING
    assert {
        c for c in ("confirm", "resume", "abort", "run", "approve", "signoff") if lifecycle.allowed(c, waiting)
    } == {
        "confirm",
        "resume",
        "abort",
    }
    commands = lifecycle.next_commands(waiting, "/srv/runs/R1", step="purge-cdn")
    assert commands[0] == "release-rollback confirm /srv/runs/R1 purge-cdn --by \"$USER\" --note 'what was done'"


def test_a_step_before_a_stage_gets_its_approval_node_on_every_edge_into_that_stage():
    nodes = yaml.safe_load((ROOT / "awx" / "config" / "workflows.yml").read_text())["controller_workflows"][0]
    out = {n["identifier"]: n for n in manual.awx_workflow_nodes(nodes["workflow_nodes"], PLAN["manual_steps"])}
    into_database = [
        i for i, n in out.items() for edges in n["related"].values() for e in edges if e["identifier"] == "database"
    ]
    assert into_database == ["manual_tell-the-dba_record"]
    # Denied (failed): database's rule is to continue, so the workflow goes on to infrastructure.
    assert out["manual_tell-the-dba"]["related"]["failure_nodes"] == [{"identifier": "infrastructure"}]
    assert out["manual_purge-the-cdn"]["related"]["failure_nodes"] == [{"identifier": "report"}]
    assert out["manual_purge-the-cdn_record"]["extra_data"] == {"rollback_manual_step": "purge-the-cdn"}
