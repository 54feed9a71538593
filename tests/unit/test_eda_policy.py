"""Standard-change policies and the trigger configuration (module_utils ``policy``), and the trigger's
decisions that need no fleet, through ``release-rollback trigger``."""

from __future__ import annotations

import hashlib
import json
import subprocess
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from conftest import CLI
from release_rollback import boundedyaml, content
from release_rollback.trigger import parse_events

policylib = content.module_utils("policy")

GOOD = {
    "name": "flags-and-code",
    "scope": ["feature_flags", "code_config"],
    "max_minutes_since_deploy": 30,
    "change_window": {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "18:00"},
}


def _load(data: bytes):
    return boundedyaml.loads(data.decode("utf-8"), boundedyaml.MANIFEST)


def write(tmp_path, doc, name="policy.yml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc) if not isinstance(doc, str) else doc)
    return path


def test_a_policy_loads_with_the_sha256_of_its_file(tmp_path):
    path = write(tmp_path, {"standard_change": GOOD})
    policy, sha = policylib.load_policy(str(path), _load)
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    assert policy["name"] == "flags-and-code" and policy["max_automatic_per_release"] == 1
    assert policy["triggers"] == ["alert", "deploy", "validation"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"scope": ["flags"]}, r"value of scope must be one or more of: feature_flags, code_config"),
        ({"scope": None}, r"missing required arguments: scope"),
        ({"max_minutes_since_deploy": 0}, r"max_minutes_since_deploy must be 1 to 1440 minutes"),
        ({"max_automatic_per_release": 0}, r"max_automatic_per_release must be 1 to 10"),
        (
            {"change_window": {"days": ["mon"], "start": "8am", "end": "18:00"}},
            r"change_window.start '8am' must be HH:MM",
        ),
        (
            {"change_window": {"days": ["monday"], "start": "08:00", "end": "18:00"}},
            r"value of days must be one or more",
        ),
        ({"name": "a b"}, r"name 'a b' must be letters, digits"),
        (
            {"approve_destructive": True},
            r"unknown key standard_change.approve_destructive \(known keys: app, change_window, description",
        ),
    ],
)
def test_a_bad_policy_is_one_sentence_with_the_fix(tmp_path, change, message):
    doc = {k: v for k, v in dict(GOOD, **change).items() if v is not None}
    with pytest.raises(policylib.PolicyError, match=message) as err:
        policylib.load_policy(str(write(tmp_path, {"standard_change": doc})), _load)
    assert "\n" not in str(err.value)


def test_a_policy_that_is_not_yaml_names_the_line(tmp_path):
    with pytest.raises(policylib.PolicyError, match=r"is not valid YAML at line \d+: fix the syntax there$"):
        policylib.load_policy(str(write(tmp_path, "standard_change:\n  name: [x\n")), _load)


def facts(**changes):
    now = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)  # a Wednesday, 10:00 UTC
    base = {
        "app": "shop",
        "environment": "prod",
        "kind": "alert",
        "plan": {"scope": ["feature_flags", "code_config", "validate"], "from_version": "r2"},
        "destructive": [],
        "deploy_time": (now - timedelta(minutes=5)).isoformat(),
        "now": now.isoformat(),
        "automatic_runs": 0,
    }
    base.update(changes)
    return base


def policy(**changes):
    return policylib.parse_policy({"standard_change": dict(GOOD, **changes)})


def test_a_plan_inside_every_condition_meets_the_policy():
    assert policylib.unmet(policy(), facts()) == []


@pytest.mark.parametrize(
    ("fact_changes", "expected"),
    [
        ({"plan": {"scope": ["feature_flags", "code_config", "database"]}}, "changes database, outside the policy"),
        (
            {"destructive": [{"what": "database down step b2", "why": "drops column orders.coupon"}]},
            "destructive step, never pre-approved: database down step b2 (drops column orders.coupon)",
        ),
        ({"deploy_time": "2026-12-02T09:00:00+00:00"}, "the deploy was 60 minutes ago, more than the policy's 30"),
        ({"deploy_time": None}, "no deploy time is recorded"),
        ({"automatic_runs": 1}, "already had 1 automatic rollback(s), the policy allows 1"),
        ({"now": "2026-12-05T10:00:00+00:00", "deploy_time": "2026-12-05T09:59:00+00:00"}, "Sat 10:00 is outside"),
        ({"now": "2026-12-02T18:00:00+00:00", "deploy_time": "2026-12-02T17:59:00+00:00"}, "Wed 18:00 is outside"),
        ({"plan": {"scope": ["code_config"], "blockers": ["host web1 unreachable"]}}, "the plan is blocked"),
        (
            {"plan": {"scope": ["code_config"], "manual_steps": [{"id": "purge-cdn", "title": "Purge the CDN"}]}},
            "manual steps a person must do, never pre-approved: Purge the CDN",
        ),
        ({"environment": "staging"}, None),
    ],
)
def test_each_condition_outside_the_policy_is_named(fact_changes, expected):
    found = policylib.unmet(policy(environment="prod"), facts(**fact_changes))
    if expected is None:
        assert found == ["the policy is for environment prod, not staging"]
    else:
        assert any(expected in why for why in found), found


def test_a_window_over_midnight_belongs_to_the_day_it_starts():
    window = {"days": ["fri"], "start": "22:00", "end": "02:00"}
    assert policylib.in_window(window, datetime(2026, 12, 4, 23, 0, tzinfo=UTC))  # Friday 23:00
    assert policylib.in_window(window, datetime(2026, 12, 5, 1, 0, tzinfo=UTC))  # Saturday 01:00
    assert not policylib.in_window(window, datetime(2026, 12, 6, 1, 0, tzinfo=UTC))  # Sunday 01:00
    assert policylib.in_window(
        {"days": ["sun"], "start": "00:00", "end": "24:00"}, datetime(2026, 12, 6, 23, 59, tzinfo=UTC)
    )


def test_only_firing_alerts_naming_an_app_and_environment_are_events():
    doc = {
        "payload": {
            "status": "firing",
            "alerts": [
                {"status": "firing", "labels": {"alertname": "A", "app": "shop", "environment": "prod"}},
                {"status": "firing", "labels": {"alertname": "B", "app": "shop", "environment": "prod"}},
                {"status": "resolved", "labels": {"alertname": "C", "app": "shop", "environment": "qa"}},
            ],
        },
        "meta": {"endpoint": "alertmanager", "received_at": "2026-12-02T10:00:00Z", "headers": {"X": "y"}},
    }
    (event,) = parse_events("alert", doc, {"app": "app", "environment": "environment"})
    assert (event.app, event.environment, event.received_at) == ("shop", "prod", "2026-12-02T10:00:00Z")
    assert "headers" not in json.dumps(event.record())


# ------------------------------------------------------------------------------------- the command
def trigger(tmp_path, config, kind=None, event=None, *extra):
    args = [CLI, "--runs-dir", str(tmp_path / "runs"), "trigger", "--config", str(config), *extra]
    if kind:
        args += ["--kind", kind, "--event-file", "-", "--json"]
    return subprocess.run(args, input=json.dumps(event) if event else "", capture_output=True, text=True, timeout=60)


def config_file(tmp_path, policy_doc=None, **env):
    entry = {"app": "shop", "environment": "prod", "inventory": str(tmp_path / "inv.yml"), "manifest": str(tmp_path)}
    entry.update(env)
    if policy_doc is not None:
        entry["policy"] = str(write(tmp_path, policy_doc, "standard-change.yml"))
    return write(tmp_path, {"rollback_triggers": {"environments": [entry]}}, "eda.yml")


def test_a_bad_policy_stops_the_trigger_with_exit_2_and_nothing_written(tmp_path):
    config = config_file(tmp_path, {"standard_change": dict(GOOD, scope=["everything"])})
    alert = {"status": "firing", "alerts": [{"labels": {"app": "shop", "environment": "prod"}}]}
    for done in (trigger(tmp_path, config, "alert", alert), trigger(tmp_path, config, None, None, "--check")):
        assert done.returncode == 2, done.stdout + done.stderr
        (line,) = done.stderr.strip().splitlines()
        assert "value of scope must be one or more of" in line and "fix it in the policy file, e.g." in line
        assert line.endswith("Nothing was changed.")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "eda").exists()


def test_check_names_each_environment_and_its_policy_hash(tmp_path):
    config = config_file(tmp_path, {"standard_change": GOOD})
    done = trigger(tmp_path, config, None, None, "--check")
    sha = hashlib.sha256((tmp_path / "standard-change.yml").read_bytes()).hexdigest()
    assert done.returncode == 0 and done.stdout == f"shop prod: policy flags-and-code (sha256 {sha})\n"


def test_alerts_without_a_recorded_deploy_outside_the_window_or_for_no_environment_are_ignored(tmp_path):
    config = config_file(tmp_path, alert_window_minutes=10)

    def alert(env, at):
        doc = {"payload": {"alerts": [{"labels": {"app": "shop", "environment": env}}]}, "meta": {"received_at": at}}
        (decision,) = [json.loads(line) for line in trigger(tmp_path, config, "alert", doc).stdout.splitlines()]
        return decision

    assert "no deploy of shop to prod is recorded" in alert("prod", "2026-12-02T10:00:00Z")["why"]
    deploy = {"app": "shop", "environment": "prod", "version": "r2", "status": "succeeded"}
    done = trigger(tmp_path, config, "deploy", {"payload": deploy, "meta": {"received_at": "2026-12-02T10:00:00Z"}})
    assert json.loads(done.stdout)["decision"] == "recorded"
    late = alert("prod", "2026-12-02T10:11:00Z")
    assert late["decision"] == "ignored" and "outside the 10-minute window" in late["why"]
    other = alert("qa", "2026-12-02T10:01:00Z")
    assert other["decision"] == "ignored" and "no environment" in other["why"]
    trail = [json.loads(line) for line in (tmp_path / "eda" / "events.jsonl").read_text().splitlines()]
    assert [e["decision"] for e in trail] == ["ignored", "recorded", "ignored", "ignored"]
    assert not (tmp_path / "runs").exists()


def test_a_failed_deploy_is_recorded_and_a_fleet_that_cannot_be_planned_leaves_no_run(tmp_path):
    manifest = write(tmp_path, {"rollback_manifest": {"app": "shop", "version": "r3"}}, "manifest.yml")
    config = config_file(tmp_path, manifest=str(manifest))  # its inventory does not exist
    deploy = {"app": "shop", "environment": "prod", "version": "r3", "status": "failed"}
    done = trigger(tmp_path, config, "deploy", {"payload": deploy, "meta": {"received_at": "2026-12-02T10:00:00Z"}})
    decision = json.loads(done.stdout)
    assert (
        decision["decision"] == "failed" and "the inventory" in decision["why"] and "does not exist" in decision["why"]
    )
    deploys = json.loads((tmp_path / "eda" / "deploys.json").read_text())
    assert deploys["shop|prod"] == {"version": "r3", "time": "2026-12-02T10:00:00Z", "status": "failed"}
    assert not (tmp_path / "runs").exists()
