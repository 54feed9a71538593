"""``release-rollback demo``: says where its fleet is, removes it afterwards unless --keep."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import urllib.request

import pytest
from conftest import CLI
from release_rollback import demo_service
from release_rollback.demo import BAD, GOOD

pytestmark = pytest.mark.e2e


def _demo(tmp_path, *args):
    env = dict(os.environ, TMPDIR=str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return subprocess.run(
        [CLI, "--runs-dir", str(tmp_path / "runs"), "demo", "--hosts", "2", *args],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_demo_names_its_fleet_and_removes_it(tmp_path):
    proc = _demo(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    fleet = next(line.split(" in ", 1)[1].split(" ...")[0] for line in proc.stdout.splitlines() if "demo fleet" in line)
    assert fleet.startswith(str(tmp_path / "tmp" / "release-rollback-demo-"))
    assert f"Demo fleet {fleet} stopped and removed (--keep leaves it)." in proc.stdout
    assert not os.path.exists(fleet)
    # Nothing is left in the temporary directory but the machine-wide record of the ports fleets were given.
    assert [p.name for p in (tmp_path / "tmp").iterdir()] == [f"release-rollback-ports-{os.getuid()}"]
    # The run and its report stay where runs go.
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert json.loads((run_dir / "report.json").read_text())["exit_state"] == "completed"


def test_the_demo_keeps_its_fleet_running_with_keep_and_names_the_command_that_stops_it(tmp_path):
    workdir = tmp_path / "fleet"
    proc = _demo(tmp_path, "--keep", "--workdir", str(workdir), "--json")
    pidfiles = [workdir / "hosts" / host / "run" / "app.pid" for host in ("web1", "web2")] + [workdir / "lb" / "lb.pid"]
    try:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        summary = json.loads(proc.stdout)
        assert summary["fleet"] == str(workdir) and summary["fleet_kept"] is True
        assert f"Demo fleet kept in {workdir}" in proc.stderr
        port = (workdir / "hosts" / "web1" / "port").read_text().strip()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/version", timeout=5) as resp:
            assert json.loads(resp.read())["version"] == summary["hosts"]["web1"].split("/")[-1]
        # Planning again on the rolled-back fleet: nothing to roll back, said first, and no advice to go further back.
        inventory, manifest = str(workdir / "inventory" / "hosts.yml"), str(workdir / "manifest.yml")
        again = subprocess.run(
            [CLI, "--runs-dir", str(tmp_path / "runs"), "plan", "-i", inventory, "-m", manifest],
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )
        assert again.returncode == 3, again.stdout + again.stderr
        assert (
            f"blocked: the plan is blocked: no host runs the manifest's release {BAD} (they run {GOOD}): "
            "there is no code to roll back; if the release they run now is bad, plan with its manifest; if the flags, "
            f"database, infrastructure changes of {BAD} are still in place, plan them alone: --scope feature_flags "
            "--scope database --scope infrastructure --scope validate"
        ) in again.stderr
        assert "--target" not in again.stdout + again.stderr
        pids = [int(p.read_text().split()[0]) for p in pidfiles]
        # The operator pastes the command the demo printed, as it is: the apps and the load balancer stop.
        command = proc.stderr.strip().splitlines()[-1].split("stop them with: ", 1)[1]
        stopped = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=120)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert not [pid for pid in pids if demo_service._running(pid)]  # gone, or a zombie not yet reaped
        assert not [p for p in pidfiles if p.exists()]
    finally:
        demo_service.fleet_stop(workdir)


def test_the_container_demo_rolls_containers_back_by_digest_and_leaves_nothing_behind(tmp_path):
    proc = _demo(tmp_path, "--containers", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["exit_state"] == "completed"
    assert all(live.startswith("1.1.0 (sha256:") and live.endswith(", running)") for live in summary["hosts"].values())
    tag = summary["kept_containers"][0].split("-web")[0]
    assert summary["kept_containers"] == [f"{tag}-web{i}.rolled-back-1.2.0" for i in (1, 2)]
    # Without --keep, the containers, the images and the fleet's directory are gone.
    left = subprocess.run(["podman", "ps", "-a", "-q", "--filter", f"name={tag}"], capture_output=True, text=True)
    assert left.stdout.split() == []
    assert not os.path.exists(summary["fleet"])
