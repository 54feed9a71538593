"""Hybrid rollbacks through the CLI, on real local fleets: manual steps in the plan beside the automated
ones, a run that waits for the operator at a blocking one, `confirm` (done or failed), runbooks, and the
emergency plan when the release left neither a manifest nor a runbook.

Each test is an operator's real sequence of commands and fails without the feature. The plan-only tests
share one fleet (a plan changes nothing); the runs that roll back have a fleet each.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers import assert_rolled_back, audit_events, edit_manifest, fleet_state, report, statuses

pytestmark = pytest.mark.e2e

WAITING_EXIT = 6
PURGE = {
    "id": "purge-cdn",
    "title": "Purge the CDN",
    "instructions": "Purge `/static/*` in the [CDN console](https://cdn.example.com/purge) and wait for 'done'.",
    "stage": "code_config",
    "position": "after",
    "owner": "web on-call",
    "blocking": True,
}


@pytest.fixture(scope="module")
def shared_fleet(tmp_path_factory):
    """One fleet for the tests that only plan (or are refused before anything runs)."""
    import subprocess

    from release_rollback.demo import build_fleet

    built = build_fleet(tmp_path_factory.mktemp("manual-fleet") / "fleet", 2)
    yield built
    subprocess.run(["chattr", "-i", str(built.flags)], capture_output=True)
    built.stop()


def hybrid(fleet) -> None:
    """The demo manifest (flags, code, database, infrastructure, validation) with a blocking manual step
    "purge CDN" after the code stage."""
    edit_manifest(fleet, lambda m: m.update(manual_steps=[dict(PURGE)]))


def state_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "state.json").read_text())


def start_hybrid(cli, fleet) -> tuple[Path, object]:
    hybrid(fleet)
    proc = cli("run", "-i", str(fleet.inventory), "-m", str(fleet.manifest), "--approver", "alice", "--yes")
    return cli.run_dirs()[-1], proc


def assert_waits_after_code(fleet, run_dir: Path, proc) -> None:
    """The run stopped after the code stage, at the manual step, with its instructions and the exact
    commands (real path, real step id); the database stage did not start."""
    assert proc.returncode == WAITING_EXIT, proc.stdout + proc.stderr
    assert all(fleet.live(h) == f"./releases/{fleet.good}" for h in fleet.hosts)  # code stage done
    assert fleet.db_revision() == "b2"  # database untouched
    assert state_of(run_dir)["lifecycle"]["state"] == "waiting for operator"
    assert "database" not in state_of(run_dir)["stages"]
    assert "Purge `/static/*` in the [CDN console](https://cdn.example.com/purge)" in proc.stdout
    assert f'release-rollback confirm {run_dir} purge-cdn --by "$USER"' in proc.stdout
    rep = report(run_dir)
    assert rep["exit_state"] == "waiting for operator" and rep["exit_code"] == WAITING_EXIT
    assert rep["waiting_for"]["id"] == "purge-cdn"


def manual_row(run_dir: Path) -> dict:
    rows = report(run_dir)["timeline"]
    names = [r.get("manual") or r["stage"] for r in rows]
    # In its place: after the code stage, before the database stage.
    assert names.index("code_config") < names.index("purge-cdn") < names.index("database"), names
    return next(r for r in rows if r.get("manual") == "purge-cdn")


def test_a_hybrid_run_waits_at_the_manual_step_until_a_named_operator_confirms_it(cli, fleet):
    run_dir, proc = start_hybrid(cli, fleet)
    assert_waits_after_code(fleet, run_dir, proc)
    # The plan showed the step in order, the layer as hybrid, and the approval bound it.
    plan = yaml.safe_load((run_dir / "plan.yml").read_text())
    kinds = [(s["stage"], s.get("kind", "automated")) for s in plan["steps"]]
    assert kinds.index(("code_config", "automated")) + 1 == kinds.index(("code_config", "manual"))
    assert plan["layers"]["code_config"] == "hybrid" and plan["layers"]["database"] == "automated"
    # resume before confirm changes nothing: still waiting, and it repeats the confirm command.
    before = fleet_state(fleet)
    early = cli("resume", str(run_dir))
    assert early.returncode == WAITING_EXIT, early.stdout + early.stderr
    assert "still" in early.stderr or "waiting for operator" in early.stderr
    assert f'release-rollback confirm {run_dir} purge-cdn --by "$USER"' in early.stderr
    assert fleet_state(fleet) == before
    # The operator confirms it, by name; resume finishes the rollback.
    done = cli("confirm", str(run_dir), "purge-cdn", "--by", "Ada Lovelace", "--note", "purged, 212 objects")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"release-rollback resume {run_dir}" in done.stdout
    resumed = cli("resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert_rolled_back(fleet)
    assert set(statuses(run_dir).values()) == {"ok"}
    # Who did what and when: the timeline, the terminal, --json and report.md/html all say it.
    row = manual_row(run_dir)
    assert row["status"] == "confirmed" and row["by"] == "Ada Lovelace" and row["note"] == "purged, 212 objects"
    assert row["ended"]
    assert "manual purge-cdn" in resumed.stdout and "confirmed by Ada Lovelace" in resumed.stdout
    for fmt in ("md", "html"):
        text = (run_dir / f"report.{fmt}").read_text()
        assert "Ada Lovelace" in text and "purged, 212 objects" in text, fmt
    shown = cli("status", str(run_dir), "--json")
    assert json.loads(shown.stdout)["run_state"] == "completed"
    events = [e for e in audit_events(run_dir) if e["event"].startswith("manual.")]
    assert [e["event"] for e in events] == ["manual.waiting", "manual.confirmed"]
    assert events[1]["by"] == "Ada Lovelace"
    assert cli("audit", "verify", str(run_dir)).returncode == 0


def test_a_manual_step_confirmed_failed_ends_partially_completed_with_the_gap_named(cli, fleet):
    run_dir, proc = start_hybrid(cli, fleet)
    assert_waits_after_code(fleet, run_dir, proc)
    refused = cli("confirm", str(run_dir), "purge-cdn", "--by", "bob", "--failed")
    assert refused.returncode == 2 and "--note" in refused.stderr  # a failure says what went wrong
    failed = cli("confirm", str(run_dir), "purge-cdn", "--by", "bob", "--failed", "--note", "CDN API returns 500")
    assert failed.returncode == 0, failed.stdout + failed.stderr
    resumed = cli("resume", str(run_dir), "--json")
    assert resumed.returncode == 5, resumed.stdout + resumed.stderr
    out = json.loads(resumed.stdout)
    assert out["exit_state"] == "partially completed"
    # The code stage's failure rule (halt) applies: no later stage changed anything.
    assert fleet.db_revision() == "b2"
    gaps = " | ".join(out["known_limitations"])
    assert "manual step purge-cdn (Purge the CDN, after code_config, owner web on-call) failed" in gaps
    assert "recorded by bob" in gaps and "CDN API returns 500" in gaps
    row = manual_row(run_dir)
    assert row["status"] == "failed" and row["by"] == "bob"
    # No dead end: once the CDN is purged after all, confirming it and resuming finishes the rollback.
    again = cli("confirm", str(run_dir), "purge-cdn", "--by", "bob", "--note", "purged by hand after the API fix")
    assert again.returncode == 0, again.stdout + again.stderr
    finished = cli("resume", str(run_dir))
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert_rolled_back(fleet)
    assert manual_row(run_dir)["status"] == "confirmed"


def test_editing_a_manual_step_after_approval_voids_the_approval(cli, shared_fleet):
    fleet = shared_fleet
    hybrid(fleet)
    proc = cli("plan", "-i", str(fleet.inventory), "-m", str(fleet.manifest))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_dir = cli.run_dirs()[-1]
    assert cli("approve", str(run_dir), "--approver", "alice").returncode == 0
    before = fleet_state(fleet)
    # The plan file's manual step is edited after approval: its hash no longer matches.
    plan_file = run_dir / "plan.yml"
    plan_file.write_text(plan_file.read_text().replace("wait for 'done'", "skip it"))
    ran = cli("run", str(plan_file))
    assert ran.returncode == 3, ran.stdout + ran.stderr
    assert "edited after it was built" in ran.stderr
    assert fleet_state(fleet) == before


@pytest.mark.parametrize("edited", ["manifest", "runbook"])
def test_editing_a_manual_steps_instructions_in_the_manifest_or_runbook_after_approval_changes_nothing(
    cli, shared_fleet, tmp_path, edited
):
    """The operator's sequence: plan (manifest + runbook), approve, someone edits a manual step's
    instructions in the manifest or the runbook, run: refused, nothing changed (promise 1)."""
    fleet = shared_fleet
    hybrid(fleet)
    runbook = tmp_path / "runbook.yml"
    drain = {"title": "Drain the old pool", "instructions": "In the LB console.", "blocking": False}
    runbook.write_text(yaml.safe_dump({"runbook": {"layers": {"infrastructure": {"manual": [drain]}}}}))
    proc = cli("plan", "-i", str(fleet.inventory), "-m", str(fleet.manifest), "--runbook", str(runbook))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_dir = cli.run_dirs()[-1]
    assert cli("approve", str(run_dir), "--approver", "alice").returncode == 0
    before = fleet_state(fleet)
    if edited == "manifest":
        edit_manifest(fleet, lambda m: m["manual_steps"][0].update(instructions="Skip the purge."))
    else:
        runbook.write_text(runbook.read_text().replace("In the LB console.", "Leave the pool as it is."))
    ran = cli("run", str(run_dir / "plan.yml"))
    assert ran.returncode == 3, ran.stdout + ran.stderr
    assert "changed after the plan was made, so its approval is void and nothing was changed" in ran.stderr
    assert fleet_state(fleet) == before
    assert "run.refused" in [e["event"] for e in audit_events(run_dir)]


def test_a_run_aborted_while_waiting_for_operator_takes_no_confirm_and_never_resumes(cli, fleet):
    """Waiting for operator, then abort: the run is final; confirm and resume are refused with the run named,
    and the database stage never starts (promises 3 and 4)."""
    run_dir, proc = start_hybrid(cli, fleet)
    assert_waits_after_code(fleet, run_dir, proc)
    aborted = cli("abort", str(run_dir), "--reason", "the CDN team will not purge tonight")
    assert aborted.returncode == 4, aborted.stdout + aborted.stderr  # the aborted exit state
    assert state_of(run_dir)["lifecycle"]["state"] == "aborted"
    confirm = cli("confirm", str(run_dir), "purge-cdn", "--by", "bob", "--note", "purged after all")
    assert confirm.returncode != 0 and "aborted" in confirm.stderr, confirm.stdout + confirm.stderr
    resumed = cli("resume", str(run_dir))
    assert resumed.returncode != 0 and "aborted" in resumed.stderr, resumed.stdout + resumed.stderr
    assert fleet.db_revision() == "b2"
    assert "database" not in state_of(run_dir)["stages"]
    assert not (run_dir / "manual.json").exists() or "purged after all" not in (run_dir / "manual.json").read_text()


def test_a_runbook_alone_gives_a_plan_whose_steps_say_from_runbook(cli, shared_fleet, tmp_path):
    fleet = shared_fleet
    runbook = tmp_path / "shop-runbook.yml"
    runbook.write_text(
        yaml.safe_dump(
            {
                "runbook": {
                    "name": "shop standard rollback",
                    "layers": {
                        "code_config": {
                            "automated": True,
                            "manual": [{k: v for k, v in PURGE.items() if k != "stage"}],
                        },
                        "validate": {"automated": True},
                        "infrastructure": {
                            "manual": [
                                {"title": "Drain the old pool", "instructions": "In the LB console.", "blocking": False}
                            ]
                        },
                    },
                }
            }
        )
    )
    proc = cli("plan", "-i", str(fleet.inventory), "--runbook", str(runbook), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    plan = json.loads(proc.stdout)["plan"]
    by = {(s["stage"], s.get("kind", "automated")): s for s in plan["steps"] if s["stage"] != "report"}
    assert by[("code_config", "automated")]["source"] == "runbook"
    assert by[("code_config", "manual")]["source"] == "runbook"
    assert by[("infrastructure", "manual")]["source"] == "runbook"
    assert plan["layers"] == {"code_config": "hybrid", "infrastructure": "manual", "validate": "automated"}
    assert plan["label"] == "runbook plan"
    text = cli("plan", "-i", str(fleet.inventory), "--runbook", str(runbook))
    assert "(from runbook)" in text.stdout and "Purge the CDN" in text.stdout


def test_a_bad_runbook_is_one_sentence_with_the_fix_exit_2_and_nothing_written(cli, tmp_path):
    runbook = tmp_path / "runbook.yml"
    runbook.write_text(
        "runbook:\n  layers:\n    code_config:\n      manual:\n        - title: Purge\n          instructions: x\n"
        "          ownr: x\n"
    )
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all: {}\n")
    proc = cli("plan", "-i", str(inventory), "--runbook", str(runbook))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert f"the runbook {runbook} has an unknown key layers.code_config.manual.ownr (did you mean owner?)" in line
    runbook.write_text("runbook:\n  layers:\n    databse: {automated: true}\n")
    proc = cli("plan", "-i", str(inventory), "--runbook", str(runbook))
    assert proc.returncode == 2 and "layers.databse (did you mean database?)" in proc.stderr
    runbook.write_text("runbook:\n  layers:\n    code_config:\n      manual:\n        - title: Purge\n")
    proc = cli("plan", "-i", str(inventory), "--runbook", str(runbook))
    assert proc.returncode == 2 and "instructions" in proc.stderr
    assert not cli.run_dirs()


def test_with_neither_manifest_nor_runbook_the_plan_is_an_emergency_plan_naming_the_missing_layers(cli, shared_fleet):
    fleet = shared_fleet
    # The run history: an earlier rollback from the same inventory rolled the database back and had a
    # manual step (its run directory, as the driver leaves it).
    earlier = cli.runs / "20261101T100000-0001"
    earlier.mkdir(parents=True)
    (earlier / "state.json").write_text(
        json.dumps({"inventory": str(fleet.inventory), "stages": {"assess": {}, "code_config": {}, "database": {}}})
    )
    (earlier / "plan.yml").write_text(
        yaml.safe_dump(
            {
                "app": "shop",
                "hash": "sha256:0",
                "steps": [],
                "scope": ["code_config", "database", "validate"],
                "manual_steps": [{"title": "Purge the CDN", "stage": "code_config", "position": "after"}],
            }
        )
    )
    proc = cli("plan", "-i", str(fleet.inventory), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    plan = json.loads(proc.stdout)["plan"]
    assert plan["label"] == "emergency plan"
    risks = " | ".join(plan["risks"])
    for layer in ("feature_flags", "database", "infrastructure"):
        assert f"the {layer} layer was not discovered" in risks
    assert "the last rollback of this application (run 20261101T100000-0001) rolled back its database" in risks
    assert "had the manual step 'Purge the CDN' (after code_config)" in risks
    assert all(s.get("source") == "discovery" for s in plan["steps"] if s["stage"] != "report")
    assert "document for future" in plan["document_for_future"]
    text = cli("plan", "-i", str(fleet.inventory))
    assert "EMERGENCY PLAN" in text.stdout and "document for future" in text.stdout
    # The report asks for the runbook to be written (an abandoned emergency plan's report too).
    run_dir = cli.run_dirs()[-1]
    assert run_dir != earlier
    assert cli("abort", str(run_dir), "--reason", "written up instead").returncode == 4
    rep = report(run_dir)
    assert rep["plan_label"] == "emergency plan" and "document for future" in rep["document_for_future"]
    assert "document for future" in (run_dir / "report.md").read_text()


def test_rollback_yml_stops_at_a_blocking_manual_step_instead_of_running_past_it(fleet, tmp_path):
    """Plain ansible-playbook cannot wait for an operator: it fails closed at the step, with its instructions,
    and no stage after it starts (promise 8)."""
    import os
    import subprocess

    root = Path(__file__).resolve().parents[2]
    hybrid(fleet)
    run = tmp_path / "playbook-run"
    proc = subprocess.run(
        [
            "ansible-playbook",
            "-i",
            str(fleet.inventory),
            str(root / "playbooks" / "rollback.yml"),
            "-e",
            f"@{fleet.manifest}",
            "-e",
            f"rollback_run_dir={run}",
            "-e",
            "rollback_approved_by=alice",
        ],
        cwd=root,
        env=dict(os.environ, ANSIBLE_CONFIG=str(root / "ansible.cfg")),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert (
        "The rollback is waiting for operator at manual step purge-cdn (Purge the CDN, owner web on-call" in proc.stdout
    )
    assert "[CDN console](https://cdn.example.com/purge)" in proc.stdout
    assert all(fleet.live(h) == f"./releases/{fleet.good}" for h in fleet.hosts)  # the code stage ran
    assert fleet.db_revision() == "b2"  # the database stage did not
    rep = report(run)
    assert rep["exit_state"] == "waiting for operator"
    assert {s["stage"]: s["status"] for s in rep["steps"]}["database"] == "skipped"
    assert manual_row(run)["status"] == "waiting"


def test_a_dry_run_of_a_hybrid_plan_goes_past_its_manual_steps_and_changes_nothing(cli, shared_fleet):
    fleet = shared_fleet
    hybrid(fleet)
    before = fleet_state(fleet)
    proc = cli("run", "-i", str(fleet.inventory), "-m", str(fleet.manifest), "--check", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert fleet_state(fleet) == before
    run_dir = cli.run_dirs()[-1]
    dry = report(run_dir / "dry-run")
    # Every stage after the manual step was dry-run too (nothing waits in a dry run).
    assert {s["stage"]: s["status"] for s in dry["steps"]}["database"] == "ok"
    assert json.loads((run_dir / "state.json").read_text())["lifecycle"]["state"] == "planned"


def _converse_in_pty(args: list[str], cwd, answers: list[tuple[str, str]], timeout: float = 600) -> tuple[int, str]:
    """Run ``args`` on a pseudo-terminal; each time the output shows the next prompt, type its answer."""
    import os
    import pty
    import select
    import subprocess
    import time

    leader, follower = pty.openpty()
    env = dict(os.environ, COLUMNS="200", LINES="60", TERM="xterm-256color")
    proc = subprocess.Popen(args, cwd=cwd, stdin=follower, stdout=follower, stderr=follower, env=env)
    os.close(follower)
    out, pending = b"", list(answers)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 1)
        if ready:
            try:
                data = os.read(leader, 65536)
            except OSError:
                break
            if not data:
                break
            out += data
            if pending and pending[0][0].encode() in out[-500:]:
                os.write(leader, pending.pop(0)[1].encode() + b"\r")
        elif proc.poll() is not None:
            break
    os.close(leader)
    return proc.wait(30), out.decode("utf-8", "replace")


def test_on_a_terminal_run_asks_for_the_confirmation_in_place_and_goes_on(cli, fleet, tmp_path):
    from conftest import CLI

    hybrid(fleet)
    args = [CLI, "--runs-dir", str(cli.runs), "run", "-i", str(fleet.inventory), "-m", str(fleet.manifest)]
    code, out = _converse_in_pty(
        [*args, "--approver", "alice", "--yes"],
        tmp_path,
        [("type your name to record it", "Grace Hopper"), ("done successfully?", "y"), ("A note", "purged")],
    )
    assert code == 0, out[-3000:]
    assert "Purge `/static/*` in the [CDN console](https://cdn.example.com/purge)" in out
    assert_rolled_back(fleet)
    run_dir = cli.run_dirs()[-1]
    row = manual_row(run_dir)
    assert row["status"] == "confirmed" and row["by"] == "Grace Hopper" and row["note"] == "purged"
