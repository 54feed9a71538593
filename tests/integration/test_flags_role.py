"""The feature_flags role through ansible-playbook: a token from Ansible Vault reaches the flag
service and no output (even at -vvv) shows it; a refusing service gives status unavailable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from flag_stub import Exchange, ReplayServer
from test_flags_hosted import TOKEN, ld_get, ld_patch

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _run_role(
    tmp_path: Path, server: ReplayServer, names: list[str], collect: bool = False
) -> subprocess.CompletedProcess:
    password = tmp_path / "vault-password"
    password.write_text("correct horse battery staple\n")
    vaulted = subprocess.run(
        [
            str(BIN / "ansible-vault"),
            "encrypt_string",
            "--vault-password-file",
            str(password),
            "--name",
            "rollback_flags_token",
            TOKEN,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert TOKEN not in vaulted
    (tmp_path / "secrets.yml").write_text(vaulted)
    manifest = {
        "version": "2.0.0",
        "flags": {
            "backend": "launchdarkly",
            "url": server.url,
            "project": "shop",
            "environment": "production",
            "names": names,
        },
    }
    playbook = [
        {
            "hosts": "localhost",
            "gather_facts": False,
            "vars_files": [str(tmp_path / "secrets.yml")],
            "vars": {
                "rollback_manifest": manifest,
                "rollback_run_id": "r1",
                "rollback_collect_failures": collect,
                "ansible_python_interpreter": sys.executable,
            },
            "tasks": [
                {
                    "name": "Turn the flags off",
                    "ansible.builtin.include_role": {"name": "release.rollback.feature_flags"},
                },
                {
                    "name": "Show the result",
                    "ansible.builtin.copy": {
                        "content": "{{ rollback_host_result_feature_flags | to_json }}",
                        "dest": str(tmp_path / "result.json"),
                    },
                },
            ],
        }
    ]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(playbook))
    return subprocess.run(
        [
            str(BIN / "ansible-playbook"),
            "-vvv",
            "-i",
            "localhost,",
            "-c",
            "local",
            "--vault-password-file",
            str(password),
            str(tmp_path / "play.yml"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(ROOT / "collections")},
    )


@pytest.mark.integration
def test_a_vaulted_token_turns_the_flags_off_and_never_shows_at_vvv(tmp_path):
    with ReplayServer() as server:
        server.expect(ld_get("new-checkout", True), ld_patch("new-checkout"), ld_get("new-checkout", False))
        done = _run_role(tmp_path, server, ["new-checkout"])
        server.check()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "ok" and result["flags"]["new-checkout"]["after"]["off"]
    assert TOKEN not in done.stdout + done.stderr
    assert "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" in done.stdout  # the module saw a token, the log did not


@pytest.mark.integration
def test_a_refusing_flag_service_makes_the_host_result_unavailable_with_the_flags_left_on(tmp_path):
    with ReplayServer() as server:
        server.expect(
            Exchange(
                "GET",
                "/api/v2/flags/shop/new-checkout?env=production",
                status=403,
                reply={"code": "forbidden", "message": "Access to the requested resource was denied"},
            )
        )
        done = _run_role(tmp_path, server, ["new-checkout", "new-search"], collect=True)
        server.check()
    # rollback_collect_failures, as the stage playbooks set it: the host's result is kept, the play goes on.
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "unavailable"
    assert "flags left on: new-checkout, new-search" in result["msg"]
    assert result["flags"]["new-search"]["left_on"] and result["flags"]["new-checkout"]["left_on"]
    assert TOKEN not in done.stdout + done.stderr


@pytest.mark.integration
def test_the_role_used_alone_fails_the_play_when_the_flags_stay_on(tmp_path):
    with ReplayServer() as server:
        server.expect(
            Exchange(
                "GET",
                "/api/v2/flags/shop/new-checkout?env=production",
                status=403,
                reply={"code": "forbidden", "message": "Access to the requested resource was denied"},
            )
        )
        done = _run_role(tmp_path, server, ["new-checkout"])
        server.check()
    assert done.returncode == 2, done.stdout[-3000:] + done.stderr[-3000:]
    assert "stage feature_flags did not succeed: localhost ended unavailable" in done.stdout
    assert "failed=1" in done.stdout and not (tmp_path / "result.json").exists()
