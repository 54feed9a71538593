"""A real Unleash server: the release's flags are disabled in one environment and read back through
its admin API, while another release's flag and the other environment stay as they were."""

from __future__ import annotations

import json
import secrets
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import need
from release_rollback import content
from unleash_server import Unleash, install, installed, node_ok, postgres_ok

unleash_utils = content.module_utils("unleash")


@pytest.fixture(scope="session")
def unleash(tmp_path_factory):
    need(node_ok(), "Node.js >= 20 (`node`) to run unleash-server")
    need(postgres_ok(), "PostgreSQL on 127.0.0.1:5432 (user postgres) for unleash-server")
    if not installed():
        need(bool(shutil.which("npm")), "npm to install unleash-server")
        install()
    server = Unleash(tmp_path_factory.mktemp("unleash"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


def names(*stems: str) -> list[str]:
    tag = secrets.token_hex(3)
    return [f"{stem}-{tag}" for stem in stems]


def test_two_release_flags_go_off_in_production_and_another_release_flag_stays_on(unleash):
    checkout, search, other = names("new-checkout", "new-search", "dark-mode")
    for flag in (checkout, search, other):
        unleash.create_flag(flag, on_in=("development", "production"))

    result = unleash_utils.turn_off(unleash.url, "default", "production", [checkout, search], unleash.token)

    assert result["errors"] == {} and result["changed"]
    assert not unleash.enabled(checkout, "production") and not unleash.enabled(search, "production")
    assert unleash.enabled(other, "production"), "another release's flag must stay on"
    assert unleash.enabled(checkout, "development"), "only the rolled-back environment changes"
    entry = result["flags"][checkout]
    assert entry["before"] == {
        "state": "enabled",
        "environment": "production",
        "project": "default",
        "strategies": 1,
        "off": False,
    }
    assert entry["after"]["state"] == "disabled" and entry["read_back"]["off"] and entry["time"].endswith("Z")

    again = unleash_utils.turn_off(unleash.url, "default", "production", [checkout, search], unleash.token)
    assert not again["changed"] and again["errors"] == {}


def test_check_mode_reads_the_state_and_changes_nothing(unleash):
    (flag,) = names("preview")
    unleash.create_flag(flag, on_in=("production",))
    result = unleash_utils.turn_off(unleash.url, "default", "production", [flag], unleash.token, check_mode=True)
    assert result["changed"] and result["flags"][flag]["would_change"]
    assert unleash.enabled(flag, "production")


def test_a_refused_token_is_unavailable_and_nothing_changes(unleash):
    (flag,) = names("refused")
    unleash.create_flag(flag, on_in=("production",))
    result = unleash_utils.turn_off(unleash.url, "default", "production", [flag], "*:*.not-the-token")
    assert result["unavailable"] and "HTTP 401" in result["errors"][flag]
    assert unleash.enabled(flag, "production")


def test_an_unknown_flag_fails_alone_and_the_others_go_off(unleash):
    (flag,) = names("known")
    unleash.create_flag(flag, on_in=("production",))
    result = unleash_utils.turn_off(unleash.url, "default", "production", ["no-such-flag", flag], unleash.token)
    assert not result["unavailable"] and "HTTP 404" in result["errors"]["no-such-flag"]
    assert not unleash.enabled(flag, "production")


def test_an_unknown_environment_is_a_failure_naming_the_environments(unleash):
    (flag,) = names("envless")
    unleash.create_flag(flag, on_in=("production",))
    result = unleash_utils.turn_off(unleash.url, "default", "staging", [flag], unleash.token)
    assert "no environment staging" in result["errors"][flag] and "production" in result["errors"][flag]


def _files_containing(root: Path, needle: str) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and needle.encode() in path.read_bytes():
            found.append(str(path.relative_to(root)))
    return found


@pytest.mark.e2e
def test_stage_unavailable_goes_on_to_code_then_resume_turns_the_flags_off_and_no_token_is_recorded(
    unleash, fleet, cli, monkeypatch
):
    checkout, search, other = names("new-checkout", "new-search", "dark-mode")
    for flag in (checkout, search, other):
        unleash.create_flag(flag, on_in=("production",))
    _point_manifest_at_unleash(fleet, unleash, [checkout, search])
    wrong = "*:*.wrong-" + secrets.token_hex(8)

    # 1. The flag system refuses the token: the stage is unavailable, the code rollback goes on.
    monkeypatch.setenv("ROLLBACK_UNLEASH_TOKEN", wrong)
    first = cli("run", "-i", str(fleet.inventory), "-m", str(fleet.manifest), "--approver", "alice", "--yes")
    assert first.returncode == 5, first.stdout + first.stderr
    (run_dir,) = cli.run_dirs()
    state = json.loads((run_dir / "state.json").read_text())
    assert state["stages"]["feature_flags"]["result"]["status"] == "unavailable"
    assert state["stages"]["code_config"]["result"]["status"] == "ok"
    assert all(fleet.live(h) == f"./releases/{fleet.good}" for h in fleet.hosts)
    assert unleash.enabled(checkout, "production") and unleash.enabled(search, "production")
    report = (run_dir / "report.md").read_text()
    assert f"flags left on: {checkout}, {search}" in report
    assert "LEFT ON" in report
    plan = yaml.safe_load((run_dir / "plan.yml").read_text())
    assert any("could not be read while planning" in r for r in plan["risks"])

    # 2. With the right token, resume retries just the flag stage.
    monkeypatch.setenv("ROLLBACK_UNLEASH_TOKEN", unleash.token)
    second = cli("resume", str(run_dir))
    assert second.returncode == 0, second.stdout + second.stderr
    assert not unleash.enabled(checkout, "production") and not unleash.enabled(search, "production")
    assert unleash.enabled(other, "production")
    rep = json.loads((run_dir / "report.json").read_text())
    assert rep["exit_state"] == "completed"
    assert rep["flags"][checkout]["before"]["off"] is False and rep["flags"][checkout]["after"]["off"] is True
    assert rep["flags"][search]["time"]

    # 3. Neither token reached any file of the run directory.
    for token in (unleash.token, wrong, unleash.token.split(".", 1)[1]):
        assert _files_containing(run_dir, token) == []


def _point_manifest_at_unleash(fleet, unleash, flags: list[str]) -> None:
    doc = yaml.safe_load(fleet.manifest.read_text())
    doc["rollback_manifest"]["flags"] = {
        "backend": "unleash",
        "url": unleash.url,
        "project": "default",
        "environment": "production",
        "names": flags,
        "token_env": "ROLLBACK_UNLEASH_TOKEN",
    }
    fleet.manifest.write_text(yaml.safe_dump(doc))


@pytest.mark.e2e
def test_the_plan_lists_each_flag_with_its_backend_and_the_state_read_from_unleash(unleash, fleet, cli, monkeypatch):
    live, already_off = names("live-flag", "off-flag")
    unleash.create_flag(live, on_in=("production",))
    unleash.create_flag(already_off, on_in=("development",))
    _point_manifest_at_unleash(fleet, unleash, [live, already_off])
    monkeypatch.setenv("ROLLBACK_UNLEASH_TOKEN", unleash.token)

    done = cli("plan", "-i", str(fleet.inventory), "-m", str(fleet.manifest))

    assert done.returncode == 0, done.stdout + done.stderr
    assert f"flag {live} (unleash): now on" in done.stdout
    assert f"flag {already_off} (unleash): now off" in done.stdout
    (run_dir,) = cli.run_dirs()
    step = next(s for s in yaml.safe_load((run_dir / "plan.yml").read_text())["steps"] if s["stage"] == "feature_flags")
    assert "unleash (project default, environment production) at " + unleash.url in step["action"]
    assert unleash.enabled(live, "production"), "planning changes nothing"
    assert _files_containing(run_dir, unleash.token) == []
