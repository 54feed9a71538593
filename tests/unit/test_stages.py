"""The stage table's failure rules and the exit state, as data."""

import pytest

OK = {"status": "ok"}


def results(**over):
    base = {
        n: dict(OK)
        for n in ("assess", "feature_flags", "code_config", "database", "infrastructure", "validate", "report")
    }
    base.update({k: v for k, v in over.items() if v is not None})
    for k, v in over.items():
        if v is None:
            base.pop(k)
    return base


def test_all_stages_ok_is_completed(mu):
    assert mu.stages.exit_state(results()) == "completed"


@pytest.mark.parametrize(
    "stage,status,go,halt",
    [
        ("feature_flags", "unavailable", True, False),
        ("feature_flags", "failed", True, False),
        ("code_config", "failed", False, True),
        ("database", "failed", True, False),
        ("infrastructure", "failed", True, False),
        ("validate", "failed", True, False),
    ],
)
def test_failure_rules_follow_the_procedure(mu, stage, status, go, halt):
    verdict = mu.stages.decide(stage, status)
    assert (verdict["go"], verdict["halt"]) == (go, halt)
    assert verdict["limitation"]


def test_assess_failure_blocks(mu):
    assert mu.stages.decide("assess", "blocked")["blocked"]
    assert mu.stages.exit_state({"assess": {"status": "blocked"}}) == "blocked"


@pytest.mark.parametrize("stage", ["feature_flags", "database", "infrastructure", "validate"])
def test_a_failed_continuing_stage_ends_partially_completed(mu, stage):
    assert mu.stages.exit_state(results(**{stage: {"status": "failed"}})) == "partially completed"


def test_code_halt_keeps_later_changing_stages_from_running_but_not_the_report(mu):
    res = {"assess": OK, "feature_flags": OK, "code_config": {"status": "failed"}}
    assert mu.stages.gate("database", res)["run"] is False
    assert mu.stages.gate("validate", res)["run"] is False
    assert mu.stages.gate("report", res)["run"] is True


def test_a_stage_not_reached_is_partial_and_aborted_wins(mu):
    assert mu.stages.exit_state(results(validate=None)) == "partially completed"
    assert mu.stages.exit_state(results(), aborted=True) == "aborted"


def test_skipped_out_of_scope_is_not_a_gap_but_skipped_unreached_is(mu):
    assert mu.stages.exit_state(results(database={"status": "skipped", "reached": True})) == "completed"
    assert mu.stages.exit_state(results(database={"status": "skipped", "reached": False})) == "partially completed"


def test_blocked_approval_with_nothing_changed_is_blocked(mu):
    res = results(feature_flags={"status": "blocked", "changed": False})
    for name in ("code_config", "database", "infrastructure", "validate"):
        res[name] = {"status": "skipped", "reached": False}
    assert mu.stages.exit_state(res) == "blocked"


def test_unknown_stage_and_status_are_refused(mu):
    with pytest.raises(ValueError, match="unknown stage"):
        mu.stages.decide("deploy", "ok")
    with pytest.raises(ValueError, match="unknown stage status"):
        mu.stages.decide("database", "meh")


def test_aggregate_counts_silent_hosts_as_failed(mu):
    res = mu.stages.aggregate("code_config", {"web1": {"status": "ok"}}, ["web1", "web2"])
    assert res["status"] == "failed"
    assert res["hosts"]["web2"]["status"] == "failed"
    assert "web2" in res["summary"]
