"""The infrastructure stage against a real nginx (and HAProxy) on loopback, switching upstreams back.

The bad release pointed the load balancer's upstream at backends running the bad release; the
previous release's snapshot points at a backend running the good release. What the load balancer
answers on /version shows which upstream is live.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from infra_services import GoodBackend, HAProxy, Nginx, has, infra_manifest, upstreams
from release_rollback.demo import BAD, GOOD

pytestmark = pytest.mark.integration


@pytest.fixture
def good_backend(fleet):
    backend = GoodBackend(fleet).start()
    yield backend
    backend.stop()


@pytest.fixture
def nginx(fleet, tmp_path, good_backend, need):
    need(has("nginx"), "nginx (apt-get install -y nginx)")
    server = Nginx(tmp_path / "nginx")
    bad = upstreams(BAD, list(fleet.ports.values()))
    server.write(live=bad)
    (server.releases / f"{BAD}.conf").write_text(bad)
    (server.releases / f"{GOOD}.conf").write_text(upstreams(GOOD, [good_backend.port]))
    server.start()
    yield server
    server.stop()


def nginx_section(server: Nginx) -> dict:
    return {
        "kind": "config_file",
        "path": str(server.upstreams),
        "snapshot": str(server.releases / "{version}.conf"),
        "validate_command": server.command("-t", "-q"),
        "reload_command": server.command("-s", "reload"),
        "verify_url": f"http://127.0.0.1:{server.port}/version",
        "verify_contains": "{version}",
    }


def run_infra(cli, fleet, manifest):
    return cli(
        "run", "-i", str(fleet.inventory), "-m", str(manifest), "--scope", "infrastructure",
        "--approver", "alice", "--yes", "--json",
    )  # fmt: skip


def infra_result(cli) -> dict:
    state = json.loads((cli.run_dirs()[-1] / "state.json").read_text())
    return state["stages"]["infrastructure"]["result"]


def test_nginx_previous_upstreams_are_validated_reloaded_and_serve_the_good_release(cli, fleet, nginx, tmp_path):
    assert nginx.version() == BAD
    master = nginx.master_pid()
    manifest = infra_manifest(fleet, nginx_section(nginx), tmp_path / "manifest.yml")

    proc = run_infra(cli, fleet, manifest)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["exit_state"] == "completed"
    assert nginx.upstreams.read_text() == (nginx.releases / f"{GOOD}.conf").read_text()
    assert (nginx.root / "upstreams.conf.rolled-back").read_text() == (nginx.releases / f"{BAD}.conf").read_text()
    # Traffic through nginx now reaches the previous release's backend, after a graceful reload (same master).
    assert {nginx.version() for _ in range(6)} == {GOOD}
    assert nginx.master_pid() == master
    infra = infra_result(cli)["infrastructure"]
    assert infra["restored"] is True
    assert infra["validation"]["mode"] == "in_place"
    assert infra["verified"]["status"] == 200
    report = (cli.run_dirs()[-1] / "report.md").read_text()
    assert str(nginx.upstreams) in report and "in place" in report


def test_nginx_invalid_previous_config_is_refused_and_the_live_config_keeps_serving(cli, fleet, nginx, tmp_path):
    live = nginx.upstreams.read_text()
    # The previous release's snapshot has a parameter nginx rejects.
    (nginx.releases / f"{GOOD}.conf").write_text(upstreams(GOOD, [fleet.ports["web1"]], extra=" weight=heavy"))
    manifest = infra_manifest(fleet, nginx_section(nginx), tmp_path / "manifest.yml")

    proc = run_infra(cli, fleet, manifest)

    assert proc.returncode == 5, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    assert out["exit_state"] == "partially completed"
    assert out["stages"]["infrastructure"] == "failed"
    assert nginx.upstreams.read_text() == live
    assert not (nginx.root / "upstreams.conf.rolled-back").exists()
    assert {nginx.version() for _ in range(4)} == {BAD}  # the live config keeps serving
    check = subprocess.run([*nginx.args(), "-t", "-q"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr  # the live file on disk is the valid one again
    result = infra_result(cli)
    assert "failed validation" in result["summary"] and "weight=heavy" in result["summary"]
    assert result["infrastructure"]["validation"]["mode"] == "in_place"
    report = (cli.run_dirs()[-1] / "report.md").read_text()
    assert "failed validation" in report


def test_nginx_config_that_does_not_verify_after_reload_is_put_back(cli, fleet, nginx, tmp_path):
    live = nginx.upstreams.read_text()
    # Valid for nginx -t, but its backend answers the bad release, so verification through nginx fails.
    (nginx.releases / f"{GOOD}.conf").write_text(upstreams(GOOD, [fleet.ports["web1"]]))
    manifest = infra_manifest(fleet, nginx_section(nginx), tmp_path / "manifest.yml")

    proc = run_infra(cli, fleet, manifest)

    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert nginx.upstreams.read_text() == live
    assert {nginx.version() for _ in range(4)} == {BAD}
    result = infra_result(cli)
    assert "put back and reloaded" in result["summary"]
    assert result["infrastructure"]["verified"]["attempts"] >= 1


@pytest.fixture
def haproxy(fleet, tmp_path, good_backend, need):
    need(has("haproxy"), "HAProxy (apt-get install -y haproxy)")
    server = HAProxy(tmp_path / "haproxy")
    bad = HAProxy.backend(BAD, list(fleet.ports.values()))
    server.write(live=bad)
    (server.releases / f"{BAD}.cfg").write_text(bad)
    (server.releases / f"{GOOD}.cfg").write_text(HAProxy.backend(GOOD, [good_backend.port]))
    server.start()
    yield server
    server.stop()


def haproxy_section(server: HAProxy) -> dict:
    return {
        "kind": "config_file",
        "path": str(server.backends),
        "snapshot": str(server.releases / "{version}.cfg"),
        # Candidate mode: haproxy -c checks the main file with the candidate copy in place of backends.cfg.
        "validate_command": f"haproxy -c -q -f {server.main_cfg} -f {{path}}",
        "reload_command": server.reload_command(),
        "verify_url": f"http://127.0.0.1:{server.port}/version",
        "verify_contains": "{version}",
    }


def test_haproxy_previous_backends_are_checked_as_a_candidate_then_reloaded(cli, fleet, haproxy, tmp_path):
    assert haproxy.version() == BAD
    manifest = infra_manifest(fleet, haproxy_section(haproxy), tmp_path / "manifest.yml")

    proc = run_infra(cli, fleet, manifest)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert haproxy.backends.read_text() == (haproxy.releases / f"{GOOD}.cfg").read_text()
    assert {haproxy.version() for _ in range(6)} == {GOOD}
    assert infra_result(cli)["infrastructure"]["validation"]["mode"] == "candidate"


def test_haproxy_invalid_previous_backends_are_never_applied(cli, fleet, haproxy, tmp_path):
    live = haproxy.backends.read_text()
    (haproxy.releases / f"{GOOD}.cfg").write_text("backend app\n    mode http\n    server s1 127.0.0.1:notaport\n")
    manifest = infra_manifest(fleet, haproxy_section(haproxy), tmp_path / "manifest.yml")

    proc = run_infra(cli, fleet, manifest)

    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert haproxy.backends.read_text() == live
    assert not (haproxy.root / "backends.cfg.rollback-candidate").exists()
    assert {haproxy.version() for _ in range(4)} == {BAD}
    assert "failed validation (candidate)" in infra_result(cli)["summary"]
