"""The run lifecycle through the CLI, on real local fleets: single-use plans, compare-and-swap changes,
approvals that bind the manifest and the inventory, resumes that finish what the plan owes, jobs that
die with their driver, and states that always say what to do next.

Each test is an operator's real sequence of commands; each would fail if its promise
(../shared/INVARIANTS.md, promises 1-6) were broken.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import assert_rolled_back, audit_events, edit_manifest, fleet_state, report, resume_after_kill, statuses
from release_rollback import demo_service, jobs

pytestmark = pytest.mark.e2e


def plan(cli, fleet, *extra: str):
    return cli("plan", "-i", str(fleet.inventory), "-m", str(fleet.manifest), *extra)


def planned(cli, fleet, *extra: str) -> Path:
    proc = plan(cli, fleet, *extra)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return cli.run_dirs()[-1]


def approve(cli, run_dir: Path, *extra: str) -> None:
    proc = cli("approve", str(run_dir / "plan.yml"), "--approver", "alice", *extra)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def edit_inventory(fleet, change) -> None:
    doc = yaml.safe_load(fleet.inventory.read_text())
    change(doc)
    fleet.inventory.write_text(yaml.safe_dump(doc))


def app_hosts(doc: dict) -> dict:
    return doc["all"]["children"]["app"]["hosts"]


def redeploy(fleet, version: str) -> None:
    """A new good release deployed to every host (as a deploy tool would): a new release directory,
    the link switched to it, the application restarted; the manifest now describes that release."""
    for host, host_dir in fleet.hosts.items():
        releases = fleet.app_root(host) / "releases"
        shutil.copytree(releases / fleet.good, releases / version, ignore=shutil.ignore_patterns("ROLLED_BACK"))
        (releases / version / "REVISION").write_text(version + "\n")
        tmp = fleet.app_root(host) / "current.new"
        os.symlink(f"./releases/{version}", tmp)
        os.replace(tmp, fleet.app_root(host) / "current")
        assert demo_service.main(["restart", str(host_dir)]) == 0
    edit_manifest(fleet, lambda m: m.update(version=version))


def break_release(fleet, host: str, release: str) -> str:
    """Make ``release`` fail to start on ``host``; returns the code to put back."""
    server = fleet.app_root(host) / "releases" / release / "server.py"
    good = server.read_text()
    server.write_text("raise SystemExit('no config')\n")
    return good


def state_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "state.json").read_text())


def next_commands(proc) -> list[str]:
    return [line.split("next:", 1)[1].strip() for line in proc.stdout.splitlines() if line.strip().startswith("next:")]


# ------------------------------------------------------------------------------ a plan runs once
def test_a_stale_plan_run_again_after_a_redeploy_is_refused_and_changes_nothing(cli, fleet):
    run_dir = planned(cli, fleet)
    approve(cli, run_dir)
    first = cli("run", str(run_dir / "plan.yml"))
    assert first.returncode == 0, first.stdout + first.stderr
    assert_rolled_back(fleet)
    # The fix ships: a new good release on every host.
    redeploy(fleet, "20261204090000Z")
    before = fleet_state(fleet)
    again = cli("run", str(run_dir / "plan.yml"))
    assert again.returncode == 3, again.stdout + again.stderr
    assert f"run {run_dir.name} is completed and never executes again" in again.stderr
    assert f"release-rollback signoff {run_dir}" in again.stderr  # the pointer to its run
    assert fleet_state(fleet) == before
    assert all(fleet.live(h) == "./releases/20261204090000Z" for h in fleet.hosts)
    resumed = cli("resume", str(run_dir))
    assert resumed.returncode == 3 and "never executes again" in resumed.stderr
    assert fleet_state(fleet) == before
    # The release record still says what happened: the old bad release was rolled back, not the new one.
    record = [json.loads(line) for line in (cli.runs.parent / "releases.jsonl").read_text().splitlines()]
    assert {e["version"] for e in record} == {fleet.bad}
    assert any(e["event"] == "run.refused" and "never executes again" in e["reason"] for e in audit_events(run_dir))


def test_a_redeploy_between_approval_and_run_leaves_every_host_as_it_is(cli, fleet):
    run_dir = planned(cli, fleet)
    approve(cli, run_dir)
    # Someone redeploys a newer release after the plan was approved, and the manifest is left as it was.
    redeploy(fleet, "20261204090000Z")
    edit_manifest(fleet, lambda m: m.update(version=fleet.bad))
    before = fleet_state(fleet)
    proc = cli("run", str(run_dir / "plan.yml"))
    # The flags were still as the plan found them, so they were turned off; nothing else changed.
    assert proc.returncode == 5, proc.stdout + proc.stderr
    # No host was switched away from the new release: each one is stale, with what was found.
    assert all(fleet.live(h) == "./releases/20261204090000Z" for h in fleet.hosts)
    assert fleet_state(fleet)["links"] == before["links"]
    code = report(run_dir)["steps"][2]
    assert code["status"] == "stale"
    for host in fleet.hosts:
        msg = code["hosts"][host]["msg"]
        assert "now runs 20261204090000Z, the plan expected 20261126081500Z: make a new plan" in msg
    # The database stage never started: the code stage did not end ok.
    assert fleet.db_revision() == "b2"
    # Resuming would find the same hosts changed: the run says to end it and make a new plan.
    assert (
        "note: Stage code_config: the hosts named above no longer run what the plan expected: end this run with "
        "abort and make a new plan (resume goes on only once they run it again)."
    ) in proc.stdout


def test_abort_of_a_completed_run_is_refused_and_it_can_still_be_signed_off(cli, fleet):
    run_dir = planned(cli, fleet)
    approve(cli, run_dir)
    assert cli("run", str(run_dir / "plan.yml")).returncode == 0
    aborted = cli("abort", str(run_dir), "--reason", "oops")
    assert aborted.returncode == 3, aborted.stdout + aborted.stderr
    assert "completed, which is final; only an unfinished run can be aborted" in aborted.stderr
    assert report(run_dir)["exit_state"] == "completed"
    assert state_of(run_dir)["lifecycle"]["state"] == "completed"
    signed = cli("signoff", str(run_dir), "--by", "rm-carol")
    assert signed.returncode == 0, signed.stdout + signed.stderr


def test_a_release_whose_code_is_rolled_back_already_has_the_rest_rolled_back_by_the_scope_the_plan_names(cli, fleet):
    # The code alone went back (a code-only run, or a run overtaken by a fix on some hosts): the release's flag,
    # schema and load balancer config are still the bad release's.
    code = cli("run", "-i", str(fleet.inventory), "-m", str(fleet.manifest), "--approver", "alice", "--yes",
               "--scope", "code_config")  # fmt: skip
    assert code.returncode == 0, code.stdout + code.stderr
    assert fleet.db_revision() == "b2" and fleet.lb_release() == fleet.bad
    assert fleet.flag()["defaultVariant"] != "off"
    # A new plan finds no code to roll back and names the scope that rolls the rest back; nothing changes.
    before = fleet_state(fleet)
    blocked = plan(cli, fleet)
    assert blocked.returncode == 3, blocked.stdout + blocked.stderr
    said = blocked.stderr.split("plan them alone: ", 1)[1].split(";", 1)[0]
    assert said == "--scope feature_flags --scope database --scope infrastructure --scope validate"
    assert "rollback_accept_disagreement" not in blocked.stderr  # no host got the bad release to leave others for
    assert fleet_state(fleet) == before
    # The operator pastes it: every host stays on the release it runs, and the rest of the release goes back.
    rest = cli("run", "-i", str(fleet.inventory), "-m", str(fleet.manifest), "--approver", "alice", "--yes",
               *said.split())  # fmt: skip
    assert rest.returncode == 0, rest.stdout + rest.stderr
    assert_rolled_back(fleet)
    done = statuses(cli.run_dirs()[-1])
    assert done.pop("code_config") == "skipped" and set(done.values()) == {"ok"}, done


# ------------------------------------------------------------------- the approval binds inputs
def test_a_manifest_edited_after_approval_is_refused_and_changes_nothing(cli, fleet):
    run_dir = planned(cli, fleet)
    approve(cli, run_dir)
    edit_manifest(fleet, lambda m: m["database"].update(target_revision="base"))
    before = fleet_state(fleet)
    proc = cli("run", str(run_dir / "plan.yml"))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "the release manifest changed after the plan was made, so its approval is void" in proc.stderr
    assert fleet_state(fleet) == before
    assert state_of(run_dir)["lifecycle"]["state"] == "approved"  # nothing started


def test_an_inventory_edited_after_approval_voids_the_approval_inside_the_job(cli, fleet):
    run_dir = planned(cli, fleet)
    approve(cli, run_dir)
    moved = fleet.root / "moved-app"
    shutil.copytree(fleet.app_root("web2"), moved, symlinks=True)
    edit_inventory(fleet, lambda d: app_hosts(d)["web2"].update(rollback_app_root=str(moved)))
    before = fleet_state(fleet)
    proc = cli("run", str(run_dir / "plan.yml"))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert fleet_state(fleet) == before
    assert os.readlink(moved / "current") == f"./releases/{fleet.bad}"
    steps = {s["stage"]: s for s in report(run_dir)["steps"]}
    for name in ("feature_flags", "code_config"):
        assert steps[name]["status"] == "blocked", steps[name]
        assert "the inventory changed after the plan was made" in steps[name]["summary"]
        assert f"web2's rollback_app_root was {fleet.app_root('web2')}, is {moved}" in steps[name]["summary"]
    # A blocked code stage halts the procedure: nothing after it was reached.
    assert {steps[n]["status"] for n in ("database", "infrastructure", "validate")} == {"skipped"}
    assert state_of(run_dir)["lifecycle"] == {**state_of(run_dir)["lifecycle"], "state": "paused", "why": "blocked"}


def test_an_edited_plan_is_refused_and_changes_nothing(cli, fleet):
    run_dir = planned(cli, fleet)
    approve(cli, run_dir)
    text = (run_dir / "plan.yml").read_text()
    edited = text.replace(f"target: {fleet.good}", "target: 20261101000000Z", 1)
    assert edited != text
    (run_dir / "plan.yml").write_text(edited)
    before = fleet_state(fleet)
    proc = cli("run", str(run_dir / "plan.yml"))
    assert proc.returncode == 3 and "edited after it was built" in proc.stderr, proc.stderr
    assert fleet_state(fleet) == before


def test_a_target_that_is_the_bad_release_is_refused_and_changes_nothing(cli, fleet):
    before = fleet_state(fleet)
    proc = cli("run", "-i", str(fleet.inventory), "-m", str(fleet.manifest), "--approver", "alice", "--yes",
               "--target", fleet.bad)  # fmt: skip
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert (
        f"target release {fleet.bad} is the release the manifest names as bad: pass the last known-good release "
        "with --target, or leave --target out"
    ) in proc.stderr
    assert fleet_state(fleet) == before


# ------------------------------------------------------------------- resume finishes the plan
def test_resume_limit_after_a_halted_batch_finishes_every_host_and_then_the_database(cli, fleet):
    edit_inventory(fleet, lambda d: d["all"]["vars"].update(rollback_serial=1))
    good_code = break_release(fleet, "web2", fleet.good)
    run_dir = planned(cli, fleet)
    approve(cli, run_dir)
    halted = cli("run", str(run_dir / "plan.yml"))
    assert halted.returncode == 5, halted.stdout + halted.stderr
    assert fleet.live("web1") == f"./releases/{fleet.good}"
    assert fleet.live("web3") == f"./releases/{fleet.bad}"  # the halted batch never switched it
    assert fleet.db_revision() == "b2"
    code = report(run_dir)["steps"][2]
    assert code["hosts"]["web2"]["status"] == "failed"
    assert code["hosts"]["web3"]["status"] == "pending"
    status = cli("status", str(run_dir))
    assert "paused (halted)" in status.stdout
    assert "web3: pending - not switched, still on 20261126081500Z" in status.stdout
    assert f"next: release-rollback resume {run_dir}" in status.stdout
    assert "code_config     ok" not in status.stdout
    # A second plan for the same fleet names the halted run first, and offers nothing that would start a
    # rollback beside it (accepting the disagreement its own work caused, or breaking its lock).
    again = cli("plan", "-i", str(fleet.inventory), "-m", str(fleet.manifest))
    assert again.returncode == 3, again.stdout + again.stderr
    assert (
        f"the plan is blocked: run {run_dir.name} is paused and still holds web2: it is rolling this application "
        f"back already; finish that rollback with `release-rollback resume {run_dir}`, or end it with "
        f"`release-rollback abort {run_dir} --reason 'why it is abandoned'`, instead of starting another rollback"
    ) in again.stderr
    assert "rollback_accept_disagreement" not in again.stderr and "--break-lock" not in again.stderr
    # The operator fixes web2 and retries just it: web3, which was never attempted, is owed too.
    (fleet.app_root("web2") / "releases" / fleet.good / "server.py").write_text(good_code)
    resumed = cli("resume", str(run_dir), "--limit", "web2")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert_rolled_back(fleet)
    assert set(statuses(run_dir).values()) == {"ok"}
    assert state_of(run_dir)["lifecycle"]["state"] == "completed"


def test_a_host_whose_restart_fails_once_is_finished_by_resume_and_the_others_are_left_alone(cli, fleet):
    good_code = break_release(fleet, "web2", fleet.good)
    run_dir = planned(cli, fleet)
    approve(cli, run_dir)
    assert cli("run", str(run_dir / "plan.yml")).returncode == 5
    web1_pid = (fleet.hosts["web1"] / "run" / "app.pid").read_text()
    (fleet.app_root("web2") / "releases" / fleet.good / "server.py").write_text(good_code)
    resumed = cli("resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert (fleet.hosts["web1"] / "run" / "app.pid").read_text() == web1_pid  # not restarted again
    assert_rolled_back(fleet)


# --------------------------------------------------------------- no work outlives its driver
def slow_downgrade(fleet, seconds: float) -> Path:
    """The bad release's Alembic environment sleeps inside every downgrade's transaction and logs
    each downgrade's start and end with its pid (the file the test reads). The sleep ends early once
    the file ``<fleet>/downgrades.release`` exists, so that a test can hold a downgrade open for as
    long as its checks take on a loaded machine and then let it go."""
    log = fleet.root / "downgrades.log"
    release = fleet.root / "downgrades.release"
    env = fleet.app_root("web1") / "releases" / fleet.bad / "migrations" / "env.py"
    text = env.read_text()
    text = text.replace(
        "        with context.begin_transaction():\n            context.run_migrations()\n",
        "        with context.begin_transaction():\n"
        "            import sys, time\n"
        "            slow = 'downgrade' in sys.argv\n"
        "            if slow:\n"
        f"                open({str(log)!r}, 'a').write(f'start {{os.getpid()}} {{time.time()}}\\n')\n"
        "                t0 = time.time()\n"
        f"                while time.time() < t0 + {seconds} and not os.path.exists({str(release)!r}):\n"
        "                    time.sleep(0.05)\n"
        "            context.run_migrations()\n"
        "            if slow:\n"
        f"                open({str(log)!r}, 'a').write(f'end {{os.getpid()}} {{time.time()}}\\n')\n",
    )
    env.write_text(text)
    return log


def wait_for(predicate, timeout: float = 180, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def run_into_a_slow_downgrade(cli, fleet, seconds: float):
    """An approved plan run in the background until its down-migration has started: (driver, run
    dir, the downgrade log, the mark of the run's jobs)."""
    log = slow_downgrade(fleet, seconds)
    run_dir = planned(cli, fleet)
    approve(cli, run_dir)
    proc = cli.popen("run", str(run_dir / "plan.yml"))
    wait_for(lambda: log.exists() and "start" in log.read_text(), what="the downgrade to start")
    return proc, run_dir, log, f"{run_dir.name}:"


def test_kill_9_during_a_slow_down_migration_then_resume_runs_one_migration_and_reports_it(cli, fleet):
    proc, run_dir, log, mark = run_into_a_slow_downgrade(cli, fleet, 4)
    proc.kill()
    proc.wait()
    # The driver is gone: its job (ansible-playbook, its workers, the module, alembic) dies with it.
    wait_for(lambda: not jobs.processes(mark), timeout=10, what="the job to die with its driver")
    time.sleep(5)  # longer than the downgrade would have taken
    assert "end" not in log.read_text(), "the downgrade went on without its driver"
    assert fleet.db_revision() == "b2"  # the killed step was rolled back whole (a transaction)
    assert "paused (interrupted)" in cli("status", str(run_dir)).stdout
    # No file left behind holds the extra vars of the killed job.
    assert not [
        p
        for root in jobs.private_roots()
        for p in root.glob("rollback-*")
        if (p / "job.mark").exists() and (p / "job.mark").read_text().startswith(mark)
    ]
    resume_after_kill(cli, fleet, run_dir, "database")
    lines = log.read_text().split()
    starts = [lines[i + 1] for i in range(0, len(lines), 3) if lines[i] == "start"]
    ends = [lines[i + 1] for i in range(0, len(lines), 3) if lines[i] == "end"]
    assert len(starts) == 2 and len(ends) == 1 and ends[0] == starts[1]  # one finished migration
    db = report(run_dir)["database"]
    assert db["from_revision"] == "b2" and db["current"] == "a1"
    # The restore point is the first attempt's backup, taken before the killed step.
    point = db["restore_point"]
    assert point["revision"] == "b2" and Path(point["path"]).is_file() and point["sha256"]
    assert point["path"] in (run_dir / "report.md").read_text()
    step = next(s for s in report(run_dir)["steps"] if s["stage"] == "database")
    assert [a["status"] for a in step["attempts"]] == ["interrupted"]


def test_resume_refuses_while_a_job_of_the_run_is_alive_and_names_it(cli, fleet):
    # The downgrade is held open (up to 10 minutes) until the checks below are done, however slow the
    # machine: resume and abort must find the job alive.
    proc, run_dir, _log, mark = run_into_a_slow_downgrade(cli, fleet, 600)
    # The driver and its job guard die together (say, the OOM killer): the job's workers live on.
    guard = next(p for p in jobs.processes(mark) if "rollback-" in p.cmdline and "/bin/ansible-playbook" in p.cmdline)
    os.kill(guard.pid, signal.SIGKILL)
    proc.kill()
    proc.wait()
    alive = jobs.processes(mark)
    assert alive, "the test needs a job that outlived its driver"
    refused = cli("resume", str(run_dir))
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "is still running" in refused.stderr and f"kill -TERM {alive[0].pid}" in refused.stderr
    assert cli("abort", str(run_dir), "--reason", "x").returncode == 3
    jobs.stop(mark)
    (fleet.root / "downgrades.release").touch()
    resumed = cli("resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert_rolled_back(fleet)


def test_ctrl_c_three_times_in_the_code_stage_reports_unknown_hosts_never_none(cli, fleet):
    slow = fleet.root / "slow-restart.sh"
    started = fleet.root / "restarting"
    slow.write_text(
        f'#!/bin/sh\ntouch {started}\nsleep 30\nexec {sys.executable} -m release_rollback.demo_service restart "$1"\n'
    )
    slow.chmod(0o755)

    def slow_restarts(d):
        for host, hv in app_hosts(d).items():
            hv.update(rollback_restart_command=[str(slow), str(fleet.hosts[host])])

    edit_inventory(fleet, slow_restarts)
    run_dir = planned(cli, fleet)
    approve(cli, run_dir)
    proc = cli.popen("run", str(run_dir / "plan.yml"))
    wait_for(started.exists, what="the code stage to restart a host")
    for _ in range(3):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 4, out + err
    assert "Stopping after code_config finishes" in err
    assert "None" not in out
    code = report(run_dir)["steps"][2]
    assert set(code["hosts"]) == set(fleet.hosts)  # the plan's hosts, not localhost
    for res in code["hosts"].values():
        assert res["status"] == "unknown", res
        assert res["msg"].startswith("not read back"), res
    assert report(run_dir)["known_limitations"][0] == "aborted: interrupted by the operator during stage code_config"
    assert "None" not in (run_dir / "report.md").read_text()
    # Nothing of the job goes on after the driver said it was interrupted.
    assert not jobs.processes(f"{run_dir.name}:")


# --------------------------------------------------------------------- pre-flight and scope
def make_layout_fleet(root: Path, layout: str, hosts: int = 2) -> tuple[Path, list[Path]]:
    """Hosts laid out as ansistrano or Capistrano leave them, and an inventory that sets only
    rollback_app_root (local connection)."""
    roots = []
    inventory: dict = {
        "all": {
            "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable},
            "children": {"app": {"hosts": {}}},
        }
    }
    for i in range(1, hosts + 1):
        app = root / f"host{i}" / "srv"
        for rel in ("20261101000000", "20261120093000", "20261126081500"):
            (app / "releases" / rel).mkdir(parents=True)
            (app / "releases" / rel / "REVISION").write_text(f"rev-{rel}\n")
        (app / "shared").mkdir()
        if layout == "capistrano":
            os.symlink(str(app / "releases" / "20261126081500"), app / "current")
            (app / "revisions.log").write_text("Branch main (at abc) deployed as release 20261126081500 by deploy\n")
        else:
            os.symlink("./releases/20261126081500", app / "current")
        inventory["all"]["children"]["app"]["hosts"][f"web{i}"] = {"rollback_app_root": str(app)}
        roots.append(app)
    inv = root / "hosts.yml"
    inv.write_text(yaml.safe_dump(inventory))
    return inv, roots


@pytest.mark.parametrize("layout", ["ansistrano", "capistrano"])
def test_an_inventory_with_only_the_app_root_rolls_a_fleet_back(cli, tmp_path, layout):
    inv, roots = make_layout_fleet(tmp_path / layout, layout)
    proc = cli("plan", "-i", str(inv))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no restart is configured on web1, web2" in proc.stdout  # stated as a risk, not a failure
    run_dir = cli.run_dirs()[-1]
    approve(cli, run_dir)
    done = cli("run", str(run_dir / "plan.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    for app in roots:
        link = os.readlink(app / "current")
        assert link == (
            str(app / "releases" / "20261120093000") if layout == "capistrano" else "./releases/20261120093000"
        )
        assert (app / "releases" / "20261126081500" / "ROLLED_BACK").exists()
        assert not (app / ".rollback.lock").exists()
    if layout == "capistrano":
        assert "rolled back to release 20261120093000" in (roots[0] / "revisions.log").read_text()


def test_an_inventory_without_app_roots_is_blocked_before_any_host_is_contacted(cli, tmp_path):
    inv = tmp_path / "hosts.yml"
    inv.write_text(
        yaml.safe_dump(
            {
                "all": {
                    "children": {
                        "app": {
                            "hosts": {
                                "web1": {
                                    "ansible_host": "192.0.2.1",
                                    "ansible_connection": "ssh",
                                },  # TEST-NET: would time out
                            }
                        }
                    }
                }
            }
        )
    )
    proc = cli("plan", "-i", str(inv))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "rollback_app_root is not set for web1: set it to the deploy directory" in proc.stderr
    # No connection to web1 was tried: no task ran on it.
    events = [json.loads(e) for e in (cli.run_dirs()[-1] / "events" / "assess.jsonl").read_text().splitlines()]
    assert not [e for e in events if e.get("host") == "web1"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_host_is_named_with_its_ssh_error_and_can_be_excluded(cli, fleet):
    port = closed_port()

    def add_web4(d):
        app_hosts(d)["web4"] = {
            "ansible_connection": "ssh",
            "ansible_host": "127.0.0.1",
            "ansible_port": port,
            "ansible_user": "root",
            "rollback_app_root": "/srv/app",
        }

    edit_inventory(fleet, add_web4)
    blocked = plan(cli, fleet)
    assert blocked.returncode == 3, blocked.stdout + blocked.stderr
    assert "host web4 could not be assessed: unreachable:" in blocked.stderr
    assert "Connection refused" in blocked.stderr  # the transport's own error
    assert "--exclude web4" in blocked.stderr
    run_dir = planned(cli, fleet, "--exclude", "web4")
    plan_doc = yaml.safe_load((run_dir / "plan.yml").read_text())
    assert sorted(plan_doc["hosts"]) == ["web1", "web2", "web3"]
    assert plan_doc["excluded"] == {"web4": "excluded with --exclude"}
    assert any("web4 (excluded with --exclude)" in r for r in plan_doc["risks"])
    approve(cli, run_dir)
    done = cli("run", str(run_dir / "plan.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "  host web4       left out     left out of this rollback (excluded with --exclude)\n" in done.stdout
    assert "(target )" not in done.stdout
    assert_rolled_back(fleet)
    (web4,) = [row for row in (run_dir / "report.md").read_text().splitlines() if row.startswith("| web4 |")]
    assert web4.startswith("| web4 | left out |") and "| left out of this rollback (excluded with --exclude) |" in web4


# ----------------------------------------------------------------------- truthful states
def test_a_plan_never_run_says_planned_and_has_no_report(cli, fleet):
    run_dir = planned(cli, fleet)
    status = cli("status", str(run_dir))
    assert status.returncode == 0
    assert "state:      planned: planned, awaiting approval" in status.stdout
    assert f'next: release-rollback approve {run_dir}/plan.yml --approver "$USER"' in status.stdout
    assert "in progress" not in status.stdout
    rep = cli("report", str(run_dir))
    assert rep.returncode == 2 and "has not run, so there is no rollback report" in rep.stderr
    assert not (run_dir / "report.md").exists()
    approve(cli, run_dir)
    assert "state:      approved" in cli("status", str(run_dir)).stdout
    assert cli("resume", str(run_dir)).returncode == 3  # nothing to resume: it never started


def test_a_paused_run_holding_host_locks_is_named_with_its_commands(cli, fleet):
    good_code = break_release(fleet, "web2", fleet.good)
    run_dir = planned(cli, fleet)
    approve(cli, run_dir)
    assert cli("run", str(run_dir / "plan.yml")).returncode == 5  # web2 keeps this run's lock
    (fleet.app_root("web2") / "releases" / fleet.good / "server.py").write_text(good_code)
    second = plan(cli, fleet)
    assert second.returncode == 3
    assert f"release-rollback resume {run_dir}" in second.stderr
    assert f"release-rollback abort {run_dir} --reason" in second.stderr
    # The commands work as printed: abort the paused run, which gives its host locks back.
    assert cli("abort", str(run_dir), "--reason", "superseded").returncode == 4
    assert not [h for h in fleet.hosts if (fleet.app_root(h) / ".rollback.lock").exists()]
    third = plan(cli, fleet)
    assert "locked by" not in third.stderr and str(run_dir) not in third.stderr


# ------------------------------------------------------------------- the ansible-playbook path
ROOT = Path(__file__).resolve().parents[2]


def playbook_execute(fleet, run_dir: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """``ansible-playbook playbooks/execute.yml`` with a plan, its approval and the manifest as they
    are now, as an AWX job or a script would pass them."""
    extra = tmp_path / "vars.json"
    extra.write_text(
        json.dumps(
            {
                "rollback_plan": yaml.safe_load((run_dir / "plan.yml").read_text()),
                "rollback_approval": json.loads((run_dir / "approval.json").read_text()),
                "rollback_manifest": yaml.safe_load(fleet.manifest.read_text())["rollback_manifest"],
                "rollback_result_assess": state_of(run_dir)["stages"]["assess"]["result"],
                "rollback_run_dir": str(tmp_path / "playbook-run"),
            }
        )
    )
    return subprocess.run(
        ["ansible-playbook", "-i", str(fleet.inventory), str(ROOT / "playbooks" / "execute.yml"), "-e", f"@{extra}"],
        cwd=ROOT,
        env=dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg")),
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_ansible_playbook_with_an_old_plan_after_a_redeploy_leaves_every_host_as_it_is(cli, fleet, tmp_path):
    run_dir = planned(cli, fleet)
    approve(cli, run_dir)
    redeploy(fleet, "20261204090000Z")
    edit_manifest(fleet, lambda m: m.update(version=fleet.bad))  # the manifest the plan was approved with
    before = fleet_state(fleet)
    proc = playbook_execute(fleet, run_dir, tmp_path)
    assert "code_config: stale - stale on web1, web2, web3" in proc.stdout, proc.stdout[-3000:]
    assert "now runs 20261204090000Z, the plan expected 20261126081500Z" in proc.stdout
    assert fleet_state(fleet)["links"] == before["links"]
    assert fleet.db_revision() == "b2"  # never reached: the code stage did not end ok


def test_ansible_playbook_refuses_a_plan_whose_manifest_changed_and_changes_nothing(cli, fleet, tmp_path):
    run_dir = planned(cli, fleet)
    approve(cli, run_dir)
    edit_manifest(fleet, lambda m: m["database"].update(target_revision="base"))
    before = fleet_state(fleet)
    proc = playbook_execute(fleet, run_dir, tmp_path)
    assert "feature_flags: blocked - the release manifest changed after the plan was made" in proc.stdout
    assert "code_config: blocked - the release manifest changed after the plan was made" in proc.stdout
    assert fleet_state(fleet) == before


def test_kill_9_while_assessing_then_abort_gives_every_host_lock_back(cli, fleet):
    proc = cli.popen("run", "-i", str(fleet.inventory), "-m", str(fleet.manifest), "--approver", "alice", "--yes")
    locks = [fleet.app_root(h) / ".rollback.lock" for h in fleet.hosts]
    wait_for(lambda: any(p.exists() for p in locks), what="a host lock taken while assessing")
    proc.kill()
    proc.wait()
    (run_dir,) = cli.run_dirs()
    wait_for(lambda: not jobs.processes(f"{run_dir.name}:"), timeout=10, what="the assess job to die")
    status = cli("status", str(run_dir))
    assert "paused (interrupted)" in status.stdout and f"release-rollback abort {run_dir}" in status.stdout
    resumed = cli("resume", str(run_dir))
    assert resumed.returncode == 3 and "has no plan" in resumed.stderr and "abort" in resumed.stderr
    aborted = cli("abort", str(run_dir), "--reason", "driver killed while assessing")
    assert aborted.returncode == 4, aborted.stdout + aborted.stderr
    assert not [p for p in locks if p.exists()]
    assert "could not be given back" not in aborted.stdout
    assert plan(cli, fleet).returncode == 0
