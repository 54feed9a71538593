"""The README's "Your first rollback", done as a new user would: command by command, over real SSH.

The host ``web1.example.com`` is an sshd on a loopback address (127.0.0.2) that the SSH client
reaches through an ssh_config given in the environment, logging in with a key, becoming root with
sudo and running modules with /usr/bin/python3, as the README's inventory says. The inventory and
the manifest are the README's blocks; only the values that name a site (the SSH user, the
application's directory, its restart command and port) are replaced by the test fleet's, and the
test checks they are the README's keys. Every shell command is run as written, with ``RUN_ID``
(which the README says to replace) being the id ``plan`` printed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import BIN, ROOT
from release_rollback.demo import BAD, GOOD, build_fleet
from test_ssh_fleet import SSHD, SshHosts

pytestmark = pytest.mark.e2e

SITE_VALUES = {
    "ansible_user",
    "rollback_app_root",
    "rollback_restart_command",
    "rollback_health_url",
    "rollback_version_url",
}


def first_rollback() -> dict:
    """The README's "Your first rollback": its named YAML blocks and its shell commands, in order."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Your first rollback\n", 1)[1].split("\n## ", 1)[0]
    files, commands = {}, []
    for lang, name, body in re.findall(r"^```(\w+)(?: (\S+))?\n(.*?)^```", section, re.S | re.M):
        if lang == "yaml" and name:
            files[name] = yaml.safe_load(body)
        elif lang == "sh":
            commands += [line for line in body.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return {"files": files, "commands": commands}


def test_the_readme_first_rollback_rolls_back_a_fleet_over_ssh(tmp_path, need):
    need(os.path.exists(SSHD), "openssh-server (/usr/sbin/sshd)")
    need(shutil.which("sudo") is not None, "sudo")
    need(os.access("/usr/bin/python3", os.X_OK), "Python 3 at /usr/bin/python3")
    guide = first_rollback()
    assert [c.split()[:2] for c in guide["commands"]] == [
        ["release-rollback", "plan"],
        ["release-rollback", "approve"],
        ["release-rollback", "run"],
        ["release-rollback", "status"],
        ["release-rollback", "signoff"],
    ]
    inventory, manifest = guide["files"]["inventory.yml"], guide["files"]["manifest.yml"]
    (host,) = inventory["app"]["hosts"]
    assert host == "web1.example.com"
    site = inventory["app"]["vars"]
    assert set(site) >= SITE_VALUES
    assert site["ansible_become"] is True and site["ansible_python_interpreter"] == "/usr/bin/python3"

    fleet = build_fleet(tmp_path / "fleet", 1)
    ssh = SshHosts(tmp_path / "ssh", 1)
    try:
        ssh_config = tmp_path / "ssh_config"
        ssh_config.write_text(
            f"Host {host}\n  HostName {ssh.addresses[0]}\n  Port {ssh.port}\n  IdentityFile {ssh.key}\n"
            "  IdentitiesOnly yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n"
        )
        port = fleet.ports["web1"]
        site.update(
            ansible_user="root",
            rollback_app_root=str(fleet.app_root("web1")),
            rollback_restart_command=[sys.executable, "-m", "release_rollback.demo_service", "restart",
                                      str(fleet.hosts["web1"])],
            rollback_health_url=f"http://127.0.0.1:{port}/health",
            rollback_version_url=f"http://127.0.0.1:{port}/version",
        )  # fmt: skip
        work = tmp_path / "first"
        work.mkdir()
        (work / "inventory.yml").write_text(yaml.safe_dump(inventory))
        (work / "manifest.yml").write_text(yaml.safe_dump(manifest))
        env = {k: v for k, v in os.environ.items() if k != "RELEASE_ROLLBACK_RUNS_DIR"}
        env.update(
            PATH=f"{BIN}{os.pathsep}{env['PATH']}",
            ANSIBLE_SSH_COMMON_ARGS=f"-F {ssh_config}",
            XDG_STATE_HOME=str(tmp_path / "state"),
        )
        run_id = None
        outputs = []
        for command in guide["commands"]:
            if "RUN_ID" in command:
                assert run_id, "the plan printed no run id"
                command = command.replace("RUN_ID", run_id)
            proc = subprocess.run(
                command, shell=True, cwd=work, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                timeout=600,
            )  # fmt: skip
            assert proc.returncode == 0, f"{command}\n{proc.stdout}\n{proc.stderr}"
            outputs.append(proc.stdout)
            if run_id is None:
                run_id = re.search(r"^Rollback plan (\S+) for shop: ", proc.stdout, re.M).group(1)
                assert re.search(rf"^\s+{re.escape(host)}\s+live {BAD}  ->  {GOOD}", proc.stdout, re.M)
        _plan, approved, ran, status, signed = outputs
        assert "Approved by Ada Lovelace" in approved
        assert "Exit state: completed" in ran
        assert fleet.live("web1") == f"./releases/{GOOD}"
        assert f"Run {run_id} " in status and "exit state: completed" in status
        assert "Signed off by Grace Hopper (release manager)" in signed
        runs = tmp_path / "state" / "release-rollback" / "runs"
        assert (runs / run_id / "report.md").is_file()
        assert "signed off by Grace Hopper" in (runs / run_id / "report.md").read_text()
    finally:
        ssh.stop()
        fleet.stop()
