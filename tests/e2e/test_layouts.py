"""The code and configuration stage on each release layout, through the CLI, on real local fleets.

Each fleet is built by the demo's fleet builder (real HTTP services restarted for real), then laid
out the way ansistrano, Capistrano or a version-named deploy leaves a host. The manifests keep only
code, configuration and validation in scope, so each run is the stage under test plus the report.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from release_rollback.demo import build_fleet

OLD, GOOD, UNFINISHED, BAD = "20261101000000Z", "20261120093000Z", "20261125000000Z", "20261126081500Z"


def code_only(fleet, version: str, **extra) -> None:
    """Keep code/config and validation in the manifest (no flags, database or infrastructure)."""
    doc = yaml.safe_load(fleet.manifest.read_text())
    m = doc["rollback_manifest"]
    doc["rollback_manifest"] = {
        "app": m["app"],
        "version": version,
        "reason": m["reason"],
        "validation": m["validation"],
        **extra,
    }
    fleet.manifest.write_text(yaml.safe_dump(doc))


def set_host_vars(fleet, **values) -> None:
    doc = yaml.safe_load(fleet.inventory.read_text())
    doc["all"]["vars"].update(values)
    fleet.inventory.write_text(yaml.safe_dump(doc))


@pytest.fixture
def make_fleet(tmp_path):
    built = []

    def make(releases, hosts=2):
        fleet = build_fleet(tmp_path / f"fleet{len(built)}", hosts, releases=tuple(releases))
        built.append(fleet)
        return fleet

    yield make
    for fleet in built:
        fleet.stop()


def run(cli, fleet, *extra):
    return cli("run", "-i", str(fleet.inventory), "-m", str(fleet.manifest), "--approver", "alice", "--yes", *extra)


def report(cli) -> dict:
    return json.loads((cli.run_dirs()[-1] / "report.json").read_text())


def version_of(fleet, host: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{fleet.ports[host]}/version", timeout=5) as resp:
        return json.loads(resp.read())["version"]


def tree(path: Path) -> dict:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_ansistrano_layout_keeps_the_relative_link_and_skips_an_unfinished_release(cli, make_fleet):
    fleet = make_fleet([OLD, GOOD, UNFINISHED, BAD])
    for host in fleet.hosts:
        (fleet.app_root(host) / "releases" / UNFINISHED / "DEPLOY_UNFINISHED").write_text("")
    shared = {h: tree(fleet.app_root(h) / "shared") for h in fleet.hosts}
    code_only(fleet, BAD)
    proc = run(cli, fleet)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for host in fleet.hosts:
        app = fleet.app_root(host)
        assert os.readlink(app / "current") == f"./releases/{GOOD}"
        assert version_of(fleet, host) == GOOD
        assert tree(app / "shared") == shared[host]
        mark = json.loads((app / "releases" / BAD / "ROLLED_BACK").read_text())
        assert mark["to"] == GOOD and mark["by"]
        assert (app / "releases" / BAD / "REVISION").is_file()  # kept, not deleted
        assert not (app / ".rollback.lock").exists()
    plan = yaml.safe_load((cli.run_dirs()[-1] / "plan.yml").read_text())
    assert plan["hosts"]["web1"]["skipped"] == [UNFINISHED]
    assert plan["hosts"]["web1"]["layout"] == "ansistrano"


def test_capistrano_layout_keeps_the_absolute_link_and_logs_the_rollback(cli, make_fleet):
    good, bad = GOOD.rstrip("Z"), BAD.rstrip("Z")
    fleet = make_fleet([good, bad])
    for host in fleet.hosts:
        app = fleet.app_root(host)
        os.unlink(app / "current")
        os.symlink(str(app / "releases" / bad), app / "current")
        (app / "revisions.log").write_text(f"Branch main (at 1a2b3c) deployed as release {bad} by bob\n")
    shared = {h: tree(fleet.app_root(h) / "shared") for h in fleet.hosts}
    code_only(fleet, bad)
    proc = run(cli, fleet)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    plan = yaml.safe_load((cli.run_dirs()[-1] / "plan.yml").read_text())
    for host in fleet.hosts:
        app = fleet.app_root(host)
        assert os.readlink(app / "current") == str(app / "releases" / good)
        assert version_of(fleet, host) == good
        assert tree(app / "shared") == shared[host]
        assert (app / "releases" / bad / "ROLLED_BACK").is_file()
        lines = (app / "revisions.log").read_text().splitlines()
        assert lines == [
            f"Branch main (at 1a2b3c) deployed as release {bad} by bob",
            f"{plan['created_by']} rolled back to release {good}",
        ]
        assert plan["hosts"][host]["layout"] == "capistrano"


def test_version_named_layout_compares_versions_and_a_second_rollback_goes_one_further_back(cli, make_fleet):
    fleet = make_fleet(["1.2.0", "1.9.0", "1.10.0"])
    shared = {h: tree(fleet.app_root(h) / "shared") for h in fleet.hosts}
    code_only(fleet, "1.10.0")
    proc = run(cli, fleet)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for host in fleet.hosts:
        app = fleet.app_root(host)
        assert os.readlink(app / "current") == "./releases/1.9.0"  # 1.9.0 < 1.10.0 as versions
        assert version_of(fleet, host) == "1.9.0"
        assert (app / "releases" / "1.10.0" / "ROLLED_BACK").is_file()
        # The snapshot of 1.9.0's configuration outside the release is back; the other kept aside.
        conf = fleet.hosts[host] / "etc" / "app.conf"
        assert "checkout = classic" in conf.read_text()
        assert "checkout = new" in Path(f"{conf}.rolled-back-1.10.0").read_text()
    # 1.9.0 turns out bad too: the next rollback goes to 1.2.0, never back onto 1.10.0.
    code_only(fleet, "1.9.0")
    proc = run(cli, fleet)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for host in fleet.hosts:
        app = fleet.app_root(host)
        assert os.readlink(app / "current") == "./releases/1.2.0"
        assert version_of(fleet, host) == "1.2.0"
        assert (app / "releases" / "1.9.0" / "ROLLED_BACK").is_file()
        assert tree(app / "shared") == shared[host]
    assert report(cli)["host_releases"] == {"web1": "1.2.0", "web2": "1.2.0"}


def links(fleet) -> dict:
    return {h: fleet.live(h) for h in fleet.hosts}


def make_live(fleet, host: str, release: str) -> None:
    """Switch ``host`` to ``release`` and restart its application, as a deploy would."""
    app = fleet.app_root(host)
    os.unlink(app / "current")
    os.symlink(f"./releases/{release}", app / "current")
    subprocess.run(
        [sys.executable, "-m", "release_rollback.demo_service", "restart", str(fleet.hosts[host])], check=True
    )


def run_accepting_disagreement(cli, fleet) -> dict:
    """Run with rollback_accept_disagreement set; it completes. Returns its plan."""
    set_host_vars(fleet, rollback_accept_disagreement=True)
    proc = run(cli, fleet)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return yaml.safe_load((cli.run_dirs()[-1] / "plan.yml").read_text())


def test_a_target_missing_on_one_host_blocks_before_any_host_changes(cli, make_fleet):
    fleet = make_fleet([OLD, GOOD, BAD], hosts=3)
    code_only(fleet, BAD)
    (fleet.app_root("web3") / "releases" / OLD).rename(fleet.app_root("web3") / f"{OLD}.moved")
    before = links(fleet)
    proc = run(cli, fleet, "--target", OLD)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert f"target release {OLD} is not on host web3" in proc.stdout + proc.stderr
    assert links(fleet) == before
    assert not list(fleet.root.glob("hosts/*/app/releases/*/ROLLED_BACK"))


def test_hosts_that_disagree_are_blocked_and_named(cli, make_fleet):
    fleet = make_fleet([GOOD, BAD], hosts=2)
    code_only(fleet, BAD)
    app = fleet.app_root("web2")
    os.unlink(app / "current")
    os.symlink(f"./releases/{GOOD}", app / "current")
    proc = cli("plan", "-i", str(fleet.inventory), "-m", str(fleet.manifest))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    assert "hosts disagree on the live release" in out
    assert f"web2: {GOOD} ->" in out and "rollback_accept_disagreement" in out


def test_a_rollback_is_refused_while_another_run_holds_the_host_lock(cli, make_fleet):
    fleet = make_fleet([GOOD, BAD], hosts=2)
    code_only(fleet, BAD)
    lock = fleet.app_root("web2") / ".rollback.lock"
    # What a rollback (or a deploy honouring the lock) in progress elsewhere leaves on the host.
    lock.write_text(json.dumps({"run_id": "20261126T090000Z-other", "operator": "bob", "time": "2026-11-26T09:00:00Z"}))
    before = links(fleet)
    proc = run(cli, fleet)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "locked by run 20261126T090000Z-other by bob" in proc.stdout + proc.stderr
    assert links(fleet) == before
    assert json.loads(lock.read_text())["run_id"] == "20261126T090000Z-other"
    # web1 was locked while it was assessed; the plan is blocked, so its lock was given back.
    assert not (fleet.app_root("web1") / ".rollback.lock").exists()


def test_disagreement_approved_host_by_host_rolls_each_host_to_its_own_target(cli, make_fleet):
    fleet = make_fleet([OLD, GOOD, BAD], hosts=2)
    code_only(fleet, BAD)
    # web2 never got the bad release: it still runs GOOD.
    make_live(fleet, "web2", GOOD)
    plan = run_accepting_disagreement(cli, fleet)
    assert plan["disagreement"] == {"web1": f"{BAD} -> {GOOD}", "web2": f"{GOOD} -> {GOOD}"}
    assert any("each host is rolled back to its own target, as approved" in r for r in plan["risks"])
    assert links(fleet) == {"web1": f"./releases/{GOOD}", "web2": f"./releases/{GOOD}"}
    assert version_of(fleet, "web1") == GOOD and version_of(fleet, "web2") == GOOD
    assert not (fleet.app_root("web2") / "releases" / GOOD / "ROLLED_BACK").exists()
    assert not (fleet.app_root("web2") / "releases" / OLD / "ROLLED_BACK").exists()


def test_an_accepted_disagreement_leaves_a_host_with_a_fix_where_it_is_never_on_the_bad_release(cli, make_fleet):
    fix = "20261204090000Z"
    fleet = make_fleet([GOOD, BAD], hosts=2)
    code_only(fleet, BAD)
    # A fix went out to web2 after the bad release (its previous release is the bad one); web1 still runs the
    # bad release.
    app = fleet.app_root("web2")
    shutil.copytree(app / "releases" / GOOD, app / "releases" / fix)
    (app / "releases" / fix / "REVISION").write_text(fix + "\n")
    shutil.copytree(app / "snapshots" / GOOD, app / "snapshots" / fix)
    make_live(fleet, "web2", fix)
    plan = run_accepting_disagreement(cli, fleet)
    assert plan["disagreement"] == {"web1": f"{BAD} -> {GOOD}", "web2": f"{fix} -> {fix}"}
    assert links(fleet) == {"web1": f"./releases/{GOOD}", "web2": f"./releases/{fix}"}
    assert version_of(fleet, "web1") == GOOD and version_of(fleet, "web2") == fix


def test_a_second_concurrent_rollback_is_refused_by_the_lock_of_the_first(cli, make_fleet, tmp_path):
    fleet = make_fleet([GOOD, BAD], hosts=2)
    code_only(fleet, BAD)
    go = tmp_path / "GO"
    restart = " ".join([sys.executable, "-m", "release_rollback.demo_service", "restart", str(fleet.hosts["web1"])])
    doc = yaml.safe_load(fleet.inventory.read_text())
    # The first rollback's restart of web1 waits for the test: both hosts are switched and locked by then.
    doc["all"]["children"]["app"]["hosts"]["web1"]["rollback_restart_command"] = [
        "sh",
        "-c",
        f"while [ ! -e {go} ]; do sleep 0.1; done; exec {restart}",
    ]
    fleet.inventory.write_text(yaml.safe_dump(doc))
    first = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "release-rollback"),
            *("--runs-dir", str(cli.runs), "run", "-i", str(fleet.inventory), "-m", str(fleet.manifest)),
            *("--approver", "alice", "--yes"),
        ],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        locks = [fleet.app_root(h) / ".rollback.lock" for h in fleet.hosts]
        deadline = time.monotonic() + 240
        while not all(p.exists() for p in locks):
            assert first.poll() is None, first.stdout.read()
            assert time.monotonic() < deadline, "the first rollback never locked both hosts"
            time.sleep(0.2)
        holder = json.loads(locks[0].read_text())
        # The second rollback comes from another controller (its own runs directory and controller-side
        # lock), so it is the hosts' locks that must refuse it.
        second = subprocess.run(
            [
                str(Path(sys.executable).parent / "release-rollback"),
                *("--runs-dir", str(tmp_path / "other-controller" / "runs"), "run", "-i", str(fleet.inventory)),
                *("-m", str(fleet.manifest), "--approver", "bob", "--yes"),
            ],
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert second.returncode == 3, second.stdout + second.stderr
        assert f"locked by run {holder['run_id']}" in second.stdout + second.stderr
        assert json.loads(locks[0].read_text()) == holder
    finally:
        go.write_text("")
        out, _ = first.communicate(timeout=300)
    assert first.returncode == 0, out
    assert links(fleet) == {"web1": f"./releases/{GOOD}", "web2": f"./releases/{GOOD}"}
    assert not any(p.exists() for p in locks)


def test_a_lock_taken_after_the_plan_blocks_every_host_before_any_changes(cli, make_fleet):
    fleet = make_fleet([GOOD, BAD], hosts=2)
    code_only(fleet, BAD)
    proc = cli("plan", "-i", str(fleet.inventory), "-m", str(fleet.manifest))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run_dir,) = cli.run_dirs()
    assert cli("approve", str(run_dir / "plan.yml"), "--approver", "alice").returncode == 0
    # Between the plan and the run, another rollback (or a deploy) takes web2's lock.
    lock = fleet.app_root("web2") / ".rollback.lock"
    other = {"run_id": "other-run", "operator": "bob", "time": "2026-11-26T09:00:00Z"}
    lock.write_text(json.dumps(other))
    before = links(fleet)
    proc = cli("run", str(run_dir / "plan.yml"))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "web2" in proc.stdout and "locked by run other-run by bob" in proc.stdout
    # No host was switched, web1's lock was taken and given back, web2's is still the other run's.
    assert links(fleet) == before
    assert not (fleet.app_root("web1") / ".rollback.lock").exists()
    assert json.loads(lock.read_text()) == other
    rep = json.loads((run_dir / "report.json").read_text())
    assert rep["exit_state"] == "blocked"
    assert next(s for s in rep["steps"] if s["stage"] == "code_config")["status"] == "blocked"
