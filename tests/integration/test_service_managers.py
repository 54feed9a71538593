"""app_service's service managers through ansible-playbook, against a real demo application.

- command with a stop/start pair: the real process is stopped and started from the new release.
- systemd: there is no systemd on these machines, so a `systemctl` earlier on PATH records the
  command line it gets and restarts the demo app; what is proven is the exact systemctl call and
  the verification after it, not systemd itself.
- a restart that fails is reported with the command and its output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import yaml
from release_rollback.demo import BAD, GOOD, build_fleet

ROOT = Path(__file__).resolve().parents[2]


def service_play(tmp_path: Path, fleet, params: dict, env_path: str | None = None) -> subprocess.CompletedProcess:
    book = tmp_path / "service.yml"
    book.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "Switch and restart",
                    "hosts": "web1",
                    "gather_facts": False,
                    "tasks": [
                        {
                            "name": "Switch",
                            "release.rollback.release_switch": {"app_root": "{{ rollback_app_root }}", "target": GOOD},
                        },
                        {
                            "name": "Restart and verify",
                            "release.rollback.app_service": {
                                "restart": True,
                                "health_url": "{{ rollback_health_url }}",
                                "version_url": "{{ rollback_version_url }}",
                                "expect_version": GOOD,
                                "retries": 40,
                                "delay": 0.25,
                                **params,
                            },
                        },
                    ],
                }
            ]
        )
    )
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    if env_path:
        env["PATH"] = env_path + os.pathsep + env["PATH"]
    return subprocess.run(
        ["ansible-playbook", "-i", str(fleet.inventory), str(book)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def version(fleet) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{fleet.ports['web1']}/version", timeout=5) as resp:
        return json.loads(resp.read())["version"]


def pid(fleet) -> str:
    """The app's pid file: its pid and start time, which name one process."""
    return (fleet.hosts["web1"] / "run" / "app.pid").read_text()


def demo(verb: str, fleet) -> list[str]:
    return [sys.executable, "-m", "release_rollback.demo_service", verb, str(fleet.hosts["web1"])]


def test_command_manager_with_a_stop_and_a_start_command(tmp_path):
    fleet = build_fleet(tmp_path / "fleet", 1)
    try:
        before = pid(fleet)
        proc = service_play(
            tmp_path,
            fleet,
            {"manager": "command", "stop_command": demo("stop", fleet), "start_command": demo("start", fleet)},
        )
        assert proc.returncode == 0, proc.stdout[-3000:]
        assert pid(fleet) != before
        assert version(fleet) == GOOD
    finally:
        fleet.stop()


def test_systemd_manager_calls_systemctl_restart_with_the_unit(tmp_path):
    fleet = build_fleet(tmp_path / "fleet", 1)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "systemctl.calls"
    restart = " ".join(demo("restart", fleet))
    (bin_dir / "systemctl").write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexec {restart}\n')
    (bin_dir / "systemctl").chmod(0o755)
    try:
        proc = service_play(tmp_path, fleet, {"manager": "systemd", "service": "shop.service"}, env_path=str(bin_dir))
        assert proc.returncode == 0, proc.stdout[-3000:]
        assert calls.read_text().splitlines() == ["restart shop.service"]
        assert version(fleet) == GOOD
    finally:
        fleet.stop()


def test_a_failing_restart_names_the_command_and_its_output(tmp_path):
    fleet = build_fleet(tmp_path / "fleet", 1)
    try:
        proc = service_play(
            tmp_path,
            fleet,
            {"manager": "command", "restart_command": [sys.executable, "-c", "raise SystemExit('port in use')"]},
        )
        assert proc.returncode != 0
        assert "failed with exit code 1: port in use" in proc.stdout
        # The link moved but the process was not restarted: it still serves the bad release.
        assert fleet.live("web1") == f"./releases/{GOOD}"
        assert version(fleet) == BAD
    finally:
        fleet.stop()
