"""Plan building, hashing and approvals."""

import pytest

MANIFEST = {"app": "shop", "version": "2.0.0", "reason": "errors"}


def facts(live="2.0.0", previous="1.9.0", releases=("1.8.0", "1.9.0", "2.0.0")):
    return {
        "live": live,
        "previous": previous,
        "releases": list(releases),
        "layout": "versions",
        "link_style": "relative",
        "app_root": "/srv/shop",
    }


def build(mu, manifest=None, host_facts=None, **options):
    parsed = mu.manifest.parse_manifest(manifest if manifest is not None else MANIFEST)
    return mu.plan.build_plan(parsed, host_facts or {"web1": facts(), "web2": facts()}, None, options)


def test_plan_targets_the_previous_release_and_has_no_blockers(mu):
    plan = build(mu)
    assert (plan["from_version"], plan["to_version"]) == ("2.0.0", "1.9.0")
    assert plan["blockers"] == []
    assert plan["hash"] == mu.plan.plan_hash(plan)
    assert [s["stage"] for s in plan["steps"]] == ["code_config", "validate", "report"]


def test_hosts_that_disagree_block_the_plan(mu):
    plan = build(mu, host_facts={"web1": facts(), "web2": facts(live="1.9.0", previous="1.8.0")})
    assert any("disagree" in b for b in plan["blockers"])


def test_a_target_missing_on_one_host_blocks(mu):
    plan = build(mu, host_facts={"web1": facts(), "web2": facts(releases=("1.9.0", "2.0.0"))}, target="1.8.0")
    assert any("1.8.0 is not on host web2" in b for b in plan["blockers"])


def test_no_previous_release_blocks_with_the_remediation(mu):
    plan = build(mu, host_facts={"web1": facts(previous=None, releases=("2.0.0",))})
    assert "last known-good release" in plan["blockers"][0]


def test_a_fleet_off_the_bad_release_is_blocked_as_nothing_to_roll_back_without_target_advice(mu):
    # Rolled back already: both hosts run 1.9.0, the oldest release they have.
    done = facts(live="1.9.0", previous=None, releases=("1.9.0", "2.0.0"))
    plan = build(mu, host_facts={"web1": done, "web2": done})
    assert plan["blockers"][0] == (
        "no host runs the manifest's release 2.0.0 (they run 1.9.0): there is no code to roll back; "
        "if the release they run now is bad, plan with its manifest"
    )
    assert not [b for b in plan["blockers"] if "--target" in b], plan["blockers"]
    assert any(b.startswith("host web2 runs release 1.9.0, not the manifest's release 2.0.0") for b in plan["blockers"])
    # A fix went out since: the hosts run a newer release than the bad one, and nothing goes back.
    fixed = facts(live="2.0.1", previous="2.0.0", releases=("1.9.0", "2.0.0", "2.0.1"))
    plan = build(mu, host_facts={"web1": fixed, "web2": fixed})
    assert plan["blockers"][0].startswith("no host runs the manifest's release 2.0.0 (they run 2.0.1)")
    # One host on the bad release: it is no case of nothing to roll back, and the other host is named.
    plan = build(mu, host_facts={"web1": facts(), "web2": done})
    assert not [b for b in plan["blockers"] if b.startswith("no host runs")]
    assert any("rollback_accept_disagreement" in b and b.startswith("host web2 runs") for b in plan["blockers"])


def test_a_run_still_holding_hosts_comes_first_and_no_advice_starts_a_second_rollback(mu, tmp_path):
    # Run r0 halted: it rolled web1 back, web2 failed and keeps its lock, web3 was never switched.
    run_dir = tmp_path / "runs" / "r0"
    run_dir.mkdir(parents=True)
    (run_dir / "state.json").write_text('{"lifecycle": {"state": "paused", "why": "halted"}}')
    lock = {"run_id": "r0", "operator": "bob"}
    held = dict(facts(live="1.9.0"), lock=lock, lock_problem="/srv/shop/.rollback.lock is locked by run r0")
    fleet = {"web1": facts(live="1.9.0"), "web2": held, "web3": facts()}
    plan = build(mu, host_facts=fleet, runs_root=str(tmp_path / "runs"))
    first = plan["blockers"][0]
    assert first.startswith("run r0 is paused and still holds web2: it is rolling this application back already; ")
    assert first.endswith(", instead of starting another rollback")
    assert f"finish that rollback with `release-rollback resume {run_dir}`" in first
    assert f"or end it with `release-rollback abort {run_dir} --reason" in first
    # Accepting the disagreement would start a second rollback beside r0: it is not offered.
    assert not [b for b in plan["blockers"] if "rollback_accept_disagreement" in b], plan["blockers"]
    assert any(b.startswith("host web1 runs release 1.9.0, not the manifest's release 2.0.0") for b in plan["blockers"])
    assert any(b.startswith("hosts disagree on the live release (1.9.0, 2.0.0)") for b in plan["blockers"])
    # Once r0 has ended, its lock is a leftover and the plan reads as before.
    (run_dir / "state.json").write_text('{"lifecycle": {"state": "aborted"}}')
    plan = build(mu, host_facts=fleet, runs_root=str(tmp_path / "runs"))
    assert not plan["blockers"][0].startswith("run r0")
    assert any("rollback_accept_disagreement" in b for b in plan["blockers"])
    # ... and the way on is a new plan that takes the leftover lock back: a final run is never aborted again.
    held_by = next(b for b in plan["blockers"] if b.startswith("host web2: /srv/shop/.rollback.lock"))
    assert held_by.endswith(
        "that run is aborted, so its lock is left over: plan again with --break-lock, which takes it back (audited)"
    )
    assert "release-rollback abort" not in held_by


def test_an_approval_binds_to_the_plan_content(mu):
    plan = build(mu)
    approval = mu.plan.approval_record(plan, "alice", "incident 42")
    assert mu.plan.approval_problem(plan, approval) is None
    plan["to_version"] = "1.8.0"
    assert "edited" in mu.plan.approval_problem(plan, approval)
    plan["hash"] = mu.plan.plan_hash(plan)
    assert "different plan" in mu.plan.approval_problem(plan, approval)


def test_no_approval_gates_every_changing_stage(mu):
    plan = build(mu)
    gate = mu.plan.stage_gate("code_config", {"assess": {"status": "ok"}}, plan, None)
    assert gate["run"] is False and gate["status"] == "blocked"
    assert mu.plan.stage_gate("report", {"assess": {"status": "ok"}}, plan, None)["run"] is True


def test_passwords_in_database_urls_are_redacted_in_the_plan(mu):
    manifest = dict(
        MANIFEST,
        database={
            "config": "/srv/shop/alembic.ini",
            "url": "postgresql://shop:s3cret@db/shop",
            "target_revision": "a1",
        },
    )
    plan = build(mu, manifest)
    assert "s3cret" not in str(plan)
    assert plan["database"]["url"] == "postgresql://shop:***@db/shop"


@pytest.mark.parametrize("approver", ["", "  ", "a\nb", "x" * 201])
def test_approver_names_must_be_one_line(mu, approver):
    with pytest.raises(ValueError):
        mu.plan.approval_record(build(mu), approver)


def test_disagreement_approved_host_by_host_is_spelled_out_in_the_plan(mu):
    mixed = {"web1": facts(), "web2": facts(live="1.9.0", previous="1.8.0")}
    blocked = build(mu, host_facts=mixed)
    assert any("web1: 2.0.0 -> 1.9.0; web2: 1.9.0 -> 1.8.0" in b for b in blocked["blockers"])
    plan = build(mu, host_facts=mixed, accept_disagreement=True)
    assert plan["blockers"] == []
    # web2 never got the bad release 2.0.0: it stays where it is instead of going one further back.
    assert plan["hosts"]["web2"]["target"] == "1.9.0" and plan["hosts"]["web1"]["target"] == "1.9.0"
    assert plan["disagreement"] == {"web1": "2.0.0 -> 1.9.0", "web2": "1.9.0 -> 1.9.0"}
    assert any("web1: 2.0.0 -> 1.9.0; web2: 1.9.0 -> 1.9.0" in r for r in plan["risks"])
    # The approval covers it: the disagreement is part of the hashed content.
    assert plan["hash"] != blocked["hash"]


def test_an_accepted_disagreement_never_rolls_a_host_onto_the_bad_release(mu):
    # A fix (2.0.1) went out to web2 after the bad 2.0.0; 2.0.0 is web2's previous release.
    fixed = facts(live="2.0.1", previous="2.0.0", releases=("1.9.0", "2.0.0", "2.0.1"))
    plan = build(mu, host_facts={"web1": facts(), "web2": fixed}, accept_disagreement=True)
    assert plan["blockers"] == []
    assert plan["hosts"]["web2"]["target"] == "2.0.1"  # left where it is, as the setting promises
    assert plan["disagreement"] == {"web1": "2.0.0 -> 1.9.0", "web2": "2.0.1 -> 2.0.1"}
    assert not [r for r in plan["risks"] if "-> 2.0.0" in r], plan["risks"]


def test_a_target_that_is_the_bad_release_blocks(mu):
    plan = build(mu, target="2.0.0")
    assert plan["blockers"] == [
        "target release 2.0.0 is the release the manifest names as bad: pass the last known-good release with "
        "--target, or leave --target out to roll back to each host's previous release"
    ]


def test_a_host_locked_by_another_run_blocks_with_the_holder(mu):
    locked = dict(facts(), lock_problem="/srv/shop/.rollback.lock is locked by run r0 by bob since T")
    plan = build(mu, host_facts={"web1": facts(), "web2": locked})
    assert any(b.startswith("host web2: /srv/shop/.rollback.lock is locked by run r0 by bob") for b in plan["blockers"])


def test_the_plan_records_the_batches(mu):
    plan = build(mu, serial=1, max_fail_percentage=0)
    assert plan["serial"] == 1 and plan["max_fail_percentage"] == 0
    assert "in batches of 1" in plan["steps"][0]["action"]


def test_the_plan_says_where_the_target_came_from(mu):
    recorded = dict(facts(), previous_source="deploy record", record={"previous": "1.9.0", "db_revision_before": "a0"})
    discovered = dict(facts(), previous_source="discovered", record=None)
    manifest = dict(
        MANIFEST,
        database={"tool": "alembic", "config": "/srv/shop/alembic.ini", "url": "sqlite:///x", "target_revision": "a1"},
    )
    plan = build(mu, manifest=manifest, host_facts={"web1": recorded, "web2": discovered})
    assert plan["hosts"]["web1"]["target_source"] == "deploy record"
    assert plan["hosts"]["web2"]["target_source"] == "discovered"
    assert any("no deployment record of the live release on web2" in r for r in plan["risks"])
    assert any("recorded database revision a0" in r and "targets a1" in r for r in plan["risks"])


def test_the_gate_filter_stops_a_driver_job_before_the_stage_table_is_asked(mu, tmp_path):
    # mu put the collection on the path; the filter is what gate.yml calls.
    from ansible_collections.release.rollback.plugins.filter.rollback import stage_gate

    plan = build(mu)
    approval = mu.plan.approval_record(plan, "alice", "incident")
    ok = {"assess": {"status": "ok"}}
    assert stage_gate("code_config", ok, plan, approval)["run"] is True
    assert stage_gate("code_config", ok, plan, approval, str(tmp_path / "stop"))["run"] is True
    (tmp_path / "stop").write_text("now\n")
    gate = stage_gate("code_config", ok, plan, approval, str(tmp_path / "stop"))
    assert gate == {
        "run": False,
        "reason": "stopped by the operator",
        "status": "skipped",
        "reached": False,
        "stop": True,
    }
    # Without the driver's variable (ansible-playbook, AWX) the stop file means nothing.
    assert stage_gate("code_config", ok, plan, approval)["run"] is True


def test_a_container_host_without_a_version_url_blocks_the_plan(mu):
    # Validate reads a container's release back only through its version URL (promise 6: "ok" is
    # what was read back), so a plan that could not do so is blocked before anyone approves it.
    settings = {"code_mechanism": "containers", "health_url": "http://127.0.0.1:1/health"}
    plan = build(mu, host_settings={"web1": settings, "web2": dict(settings, version_url="http://127.0.0.1:1/version")})
    assert [b for b in plan["blockers"] if "rollback_version_url" in b] == [
        "host web1 runs containers and has no rollback_version_url: the rollback could not read back which release it "
        "runs; set rollback_version_url (and rollback_health_url) in the inventory"
    ]
