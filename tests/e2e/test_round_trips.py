"""One module round trip per host per stage, and host locks that are never left behind.

The driver's `run` takes every host's lock in the assess stage's discovery call, and the code stage
locks, switches, restarts, verifies and unlocks each host in one more call. A plan made for later
is locked by the code stage's own lock pass. Whatever way the run ends without rolling a host back
(blocked, not approved, aborted), the locks it took are given back; a host that failed keeps this
run's lock until the run is resumed or aborted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import yaml
from helpers import assert_rolled_back, audit_events, report


def _started(run_dir: Path, stage: str, hosts) -> list[dict]:
    """The tasks ``hosts`` started during ``stage`` and did not skip (a skipped task makes no round trip)."""
    events = [json.loads(line) for line in (run_dir / "events" / f"{stage}.jsonl").read_text().splitlines()]
    skipped = {(e.get("host"), e.get("task")) for e in events if e["event"] == "runner_on_skipped"}
    return [
        e
        for e in events
        if e["event"] == "runner_on_start" and e.get("host") in hosts and (e["host"], e.get("task")) not in skipped
    ]


def module_calls(run_dir: Path, stage: str, hosts) -> Counter:
    """How many times each host ran one of the collection's modules during ``stage``."""
    started = _started(run_dir, stage, hosts)
    return Counter(e["host"] for e in started if str(e.get("task_action", "")).startswith("release.rollback."))


# Not per-host work: the role's argument check, and the code stage's one decision per batch (run_once).
_NOT_PER_HOST = (
    "Validating arguments against arg spec",
    "Decide whether this batch is left as it is",
    # Once per batch (run_once): the stage role's check when it is used on its own.
    "Fail the play when the stage did not succeed on every host (run once)",
)


def host_tasks(run_dir: Path, stage: str, hosts) -> Counter:
    """Every task each host ran during ``stage``, by action (but the ones of _NOT_PER_HOST)."""
    return Counter(
        (e["host"], e.get("task_action"))
        for e in _started(run_dir, stage, hosts)
        if not str(e.get("task", "")).startswith(_NOT_PER_HOST)
    )


def actions(run_dir: Path, stage: str) -> set[str]:
    lines = (run_dir / "events" / f"{stage}.jsonl").read_text().splitlines()
    return {json.loads(e).get("task_action") for e in lines} - {None}


def locks(fleet) -> dict[str, dict]:
    out = {}
    for host in fleet.hosts:
        path = fleet.app_root(host) / ".rollback.lock"
        if path.exists():
            out[host] = json.loads(path.read_text())
    return out


def test_run_makes_one_module_call_per_host_in_assess_and_in_the_code_stage(cli, fleet):
    proc = cli("run", "-i", str(fleet.inventory), "-m", str(fleet.manifest), "--approver", "alice", "--yes")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run_dir,) = cli.run_dirs()
    assert_rolled_back(fleet)
    assert yaml_plan(run_dir)["locked"] is True
    assert module_calls(run_dir, "assess", fleet.hosts) == {h: 1 for h in fleet.hosts}
    assert module_calls(run_dir, "code_config", fleet.hosts) == {h: 1 for h in fleet.hosts}
    assert "release.rollback.release_lock" not in actions(run_dir, "code_config")
    # Nothing else runs per host: the modules return the host's result as a fact (no set_fact task).
    # Assess reads every host and takes its lock in one call (release_claim): a _facts module never writes.
    assert host_tasks(run_dir, "assess", fleet.hosts) == {(h, "release.rollback.release_claim"): 1 for h in fleet.hosts}
    assert host_tasks(run_dir, "code_config", fleet.hosts) == {
        (h, "release.rollback.code_rollback"): 1 for h in fleet.hosts
    }
    assert locks(fleet) == {}


def test_a_plan_made_for_later_is_locked_by_the_code_stage_itself(cli, fleet):
    assert cli("plan", "-i", str(fleet.inventory), "-m", str(fleet.manifest)).returncode == 0
    (run_dir,) = cli.run_dirs()
    assert yaml_plan(run_dir)["locked"] is False
    assert locks(fleet) == {}  # planning alone locks nothing
    assert cli("approve", str(run_dir / "plan.yml"), "--approver", "alice").returncode == 0
    proc = cli("run", str(run_dir / "plan.yml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_rolled_back(fleet)
    # The lock pass, then the one call that rolls the host back.
    assert module_calls(run_dir, "code_config", fleet.hosts) == {h: 2 for h in fleet.hosts}
    assert locks(fleet) == {}


def test_a_plan_not_approved_gives_the_host_locks_back(cli, fleet):
    # No --yes and no terminal: the plan is built (and the hosts locked), then refused.
    proc = cli("run", "-i", str(fleet.inventory), "-m", str(fleet.manifest))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    (run_dir,) = cli.run_dirs()
    assert yaml_plan(run_dir)["locked"] is True
    assert locks(fleet) == {}
    released = [e for e in audit_events(run_dir) if e["event"] == "host_locks.released"]
    assert released and released[0]["reason"] == "the plan was not approved"
    assert all(fleet.live(h) == f"./releases/{fleet.bad}" for h in fleet.hosts)


def test_a_failed_host_keeps_the_lock_until_the_run_is_aborted(cli, fleet):
    server = fleet.app_root("web2") / "releases" / fleet.good / "server.py"
    server.write_text("raise SystemExit('no config')\n")
    proc = cli("run", "-i", str(fleet.inventory), "-m", str(fleet.manifest), "--approver", "alice", "--yes")
    assert proc.returncode == 5, proc.stdout + proc.stderr
    (run_dir,) = cli.run_dirs()
    code = next(s for s in report(run_dir)["steps"] if s["stage"] == "code_config")
    assert code["hosts"]["web2"]["status"] == "failed"
    assert "restart and verify" in code["hosts"]["web2"]["msg"]
    run_id = json.loads((run_dir / "state.json").read_text())["run_id"]
    # web1 and web3 were rolled back and unlocked; web2 keeps this run's lock for a resume.
    assert {h: lock["run_id"] for h, lock in locks(fleet).items()} == {"web2": run_id}
    aborted = cli("abort", str(run_dir), "--reason", "handing over to the database team")
    assert aborted.returncode == 4, aborted.stdout + aborted.stderr
    assert locks(fleet) == {}
    assert any(e["event"] == "host_locks.released" for e in audit_events(run_dir))


def test_the_code_stage_module_refuses_a_host_another_run_locked_after_assess(fleet, tmp_path):
    """Between assess and the code stage another run may break a stale lock and take the host: the
    one call that rolls the host back finds the lock is not this run's and leaves the host as it is."""
    book = tmp_path / "refuse.yml"
    lock = fleet.app_root("web3") / ".rollback.lock"
    lock.write_text(json.dumps({"run_id": "other-run", "operator": "bob", "time": "2026-11-26T09:00:00Z"}))
    book.write_text(
        json.dumps(
            [
                {
                    "hosts": "web3",
                    "gather_facts": False,
                    "tasks": [
                        {
                            "release.rollback.code_rollback": {
                                "app_root": "{{ rollback_app_root }}",
                                "target": fleet.good,
                                "run_id": "this-run",
                                "lock": True,
                                "restart": False,
                            },
                            "register": "out",
                            "ignore_errors": True,
                        },
                        {
                            "ansible.builtin.copy": {
                                "content": "{{ out | to_json }}",
                                "dest": str(tmp_path / "out.json"),
                            },
                            "delegate_to": "localhost",
                        },
                    ],
                }
            ]
        )
    )
    play(fleet, book)
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["failed"] is True
    assert out["host_result"]["status"] == "blocked"
    assert "locked by run other-run by bob" in out["host_result"]["msg"]
    assert out["host_result"]["release"] == fleet.bad
    assert fleet.live("web3") == f"./releases/{fleet.bad}"
    assert json.loads(lock.read_text())["run_id"] == "other-run"


def play(fleet, book: Path) -> None:
    """Run the playbook ``book`` against the fleet with the project's ansible.cfg; it must succeed."""
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        ["ansible-playbook", "-i", str(fleet.inventory), str(book)],
        cwd=root,
        env=ansible_env(root),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def yaml_plan(run_dir: Path) -> dict:
    return yaml.safe_load((run_dir / "plan.yml").read_text())


def ansible_env(root: Path) -> dict:
    return dict(os.environ, ANSIBLE_CONFIG=str(root / "ansible.cfg"), ANSIBLE_NOCOLOR="1")


def test_release_facts_never_writes_and_release_claim_reports_the_lock_it_takes(fleet, tmp_path):
    """The _facts module only reads; taking the lock in the discovery's round trip is release_claim's
    job, which reports it as a change, and takes nothing in check mode."""
    lock = fleet.app_root("web1") / ".rollback.lock"
    out = tmp_path / "out"
    out.mkdir()

    def call(name: str, module: str, args: dict, check: bool = False):
        return [
            {
                module: {"app_root": "{{ rollback_app_root }}", **args},
                "register": name,
                "check_mode": check,
                "ignore_errors": True,
            },
            {
                "ansible.builtin.copy": {"content": "{{ " + name + " | to_json }}", "dest": str(out / f"{name}.json")},
                "delegate_to": "localhost",
            },
        ]

    tasks = [
        *call("facts", "release.rollback.release_facts", {"run_id": "this-run"}),
        *call("facts_asked_to_lock", "release.rollback.release_facts", {"run_id": "this-run", "lock": True}),
        *call("claim_checked", "release.rollback.release_claim", {"run_id": "this-run", "operator": "alice"}, True),
        *call("claim", "release.rollback.release_claim", {"run_id": "this-run", "operator": "alice"}),
        *call("claim_again", "release.rollback.release_claim", {"run_id": "this-run", "operator": "alice"}),
    ]
    book = tmp_path / "claim.yml"
    book.write_text(json.dumps([{"hosts": "web1", "gather_facts": False, "tasks": tasks}]))
    play(fleet, book)
    result = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
    facts = result["facts"]
    assert facts["changed"] is False and facts["live"] == fleet.bad and facts["previous"] == fleet.good
    assert facts["locked"] is False
    assert result["facts_asked_to_lock"]["failed"] is True
    assert "lock" in result["facts_asked_to_lock"]["msg"]
    checked = result["claim_checked"]
    assert checked["changed"] is True and checked["locked"] is False
    claimed = result["claim"]
    assert claimed["changed"] is True and claimed["locked"] is True and claimed["live"] == fleet.bad
    assert claimed["ansible_facts"]["rollback_host_result_assess"]["previous"] == fleet.good
    assert result["claim_again"]["changed"] is False and result["claim_again"]["locked"] is True
    holder = json.loads(lock.read_text())
    assert holder["run_id"] == "this-run" and holder["operator"] == "alice"


def test_assess_reads_the_database_and_the_flags_while_a_slow_host_is_still_being_discovered(cli, fleet, tmp_path):
    """Assess reads every host at once: the database revision and the flags' state do not wait for the
    slowest application host's discovery (web3's interpreter takes 4 s to start), and the plan is the
    same as ever."""
    slow = tmp_path / "slow-python"
    slow.write_text(f'#!/bin/sh\nsleep 4\nexec {sys.executable} "$@"\n')
    slow.chmod(0o755)
    inventory = yaml.safe_load(fleet.inventory.read_text())
    inventory["all"]["children"]["app"]["hosts"]["web3"]["ansible_python_interpreter"] = str(slow)
    fleet.inventory.write_text(yaml.safe_dump(inventory))

    proc = cli("plan", "-i", str(fleet.inventory), "-m", str(fleet.manifest))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run_dir,) = cli.run_dirs()
    plan = yaml_plan(run_dir)
    assert plan["blockers"] == [] and sorted(plan["hosts"]) == sorted(fleet.hosts)
    assert (plan["from_version"], plan["to_version"]) == (fleet.bad, fleet.good)
    assert plan["database"]["current_revision"] == "b2"
    flags = next(s for s in plan["steps"] if s["stage"] == "feature_flags")["flags"]
    assert [(f["name"], f["state"]) for f in flags] == [("new-checkout", "on")]

    events = [json.loads(line) for line in (run_dir / "events" / "assess.jsonl").read_text().splitlines()]
    done = {(e.get("host"), e.get("task_action")): e["counter"] for e in events if e["event"] == "runner_on_ok"}
    web3_discovered = done[("web3", "release.rollback.release_facts")]
    assert done[("db1", "release.rollback.db_migrate")] < web3_discovered
    assert done[("localhost", "release.rollback.flag_off")] < web3_discovered
