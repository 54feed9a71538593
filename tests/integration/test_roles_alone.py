"""A stage role used on its own, in the user's play, fails the play when its stage fails on a host;
the stage playbooks keep collecting every host's result (rollback_collect_failures)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.integration


def _play(tmp_path: Path, collect: bool) -> subprocess.CompletedProcess:
    app = tmp_path / "app"
    (app / "releases" / "1.5.0").mkdir(parents=True)
    (app / "current").symlink_to(app / "releases" / "1.5.0")
    inventory = {
        "all": {
            "hosts": {
                # A target that does not exist on the host: the switch fails.
                "web1": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable},
                # Nothing listens there: the host is unreachable.
                "ghost": {
                    "ansible_host": "127.0.0.1",
                    "ansible_port": 9,
                    "ansible_user": "nobody",
                    "ansible_ssh_common_args": "-o ConnectTimeout=3 -o BatchMode=yes",
                },
            }
        }
    }
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    play = [
        {
            "hosts": "all",
            "gather_facts": False,
            "tasks": [
                {
                    "name": "Roll code back",
                    "ansible.builtin.include_role": {"name": "release.rollback.code_config"},
                    "vars": {
                        "rollback_app_root": str(app),
                        "rollback_service_manager": "none",
                        "rollback_lock": False,
                        "rollback_collect_failures": collect,
                        "rollback_plan": {
                            "run_id": "alone",
                            "hosts": {
                                "web1": {"live": "1.5.0", "target": "1.4.9"},
                                "ghost": {"live": "1.5.0", "target": "1.4.1"},
                            },
                        },
                    },
                },
                {"name": "After the role", "ansible.builtin.debug": {"msg": "play went on"}},
            ],
        }
    ]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    return subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(tmp_path / "hosts.yml"), str(tmp_path / "play.yml")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(ROOT / "collections"), "ANSIBLE_NOCOLOR": "1"},
    )


def test_the_code_config_role_alone_fails_the_play_for_a_failed_and_an_unreachable_host(tmp_path):
    done = _play(tmp_path, collect=False)
    out = done.stdout
    assert done.returncode != 0, out[-3000:]
    assert "stage code_config did not succeed: " in out, out[-3000:]
    assert "web1 ended failed" in out, out[-3000:]
    assert "ghost ended failed: no result for the host (unreachable?)" in out, out[-3000:]
    assert "play went on" not in out
    assert os.readlink(tmp_path / "app" / "current").endswith("1.5.0")


def test_collecting_failures_keeps_the_play_going_as_the_stage_playbooks_do(tmp_path):
    done = _play(tmp_path, collect=True)
    assert "play went on" in done.stdout, done.stdout[-3000:]
    assert "stage code_config did not succeed: " not in done.stdout
