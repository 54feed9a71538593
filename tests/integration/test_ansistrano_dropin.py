"""The drop-in for ansistrano.rollback: a playbook written for it, with only the role name changed.

The fleet is laid out the way ansistrano.deploy leaves it: <deploy_to>/releases/<YYYYmmddHHMMSSZ>
with a REVISION file, <deploy_to>/current -> ./releases/<live>, <deploy_to>/shared/. The release
mtimes disagree with the names (an old release was touched last), which fools ansistrano.rollback's
mtime ordering; the drop-in picks by name.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RELEASES = ["20261101090000Z", "20261115090000Z", "20261120093000Z", "20261126081500Z"]

# A playbook as ansistrano.rollback's README writes it, hooks included.
ANSISTRANO_PLAYBOOK = """
- name: Roll back the application
  hosts: app
  gather_facts: false
  vars:
    ansistrano_deploy_to: "{{ deploy_to }}"
    ansistrano_version_dir: releases
    ansistrano_current_dir: current
    ansistrano_allow_anonymous_stats: false
    ansistrano_rollback_before_setup_tasks_file: "{{ playbook_dir }}/hooks/before-setup.yml"
    ansistrano_rollback_after_setup_tasks_file: "{{ playbook_dir }}/hooks/after-setup.yml"
    ansistrano_rollback_before_symlink_tasks_file: "{{ playbook_dir }}/hooks/before-symlink.yml"
    ansistrano_rollback_after_symlink_tasks_file: "{{ playbook_dir }}/hooks/after-symlink.yml"
    ansistrano_rollback_before_cleanup_tasks_file: "{{ playbook_dir }}/hooks/before-cleanup.yml"
    ansistrano_rollback_after_cleanup_tasks_file: "{{ playbook_dir }}/hooks/after-cleanup.yml"
  roles:
    - { role: ansistrano.rollback }
"""

HOOK = """
- name: Record the hook {name}
  ansible.builtin.lineinfile:
    path: "{{{{ deploy_to }}}}/../hooks.log"
    create: true
    mode: "0644"
    line: >-
      {name} current={{{{ ansistrano_current_release_version | default('-') }}}}
      rollback={{{{ ansistrano_rollback_release_version | default('-') }}}}
      path={{{{ ansistrano_release_path | default('-') }}}}
      link={{{{ lookup('ansible.builtin.pipe', 'readlink ' ~ deploy_to ~ '/current') }}}}
"""


def deployed_fleet(root: Path, hosts=("web1", "web2")) -> Path:
    inv = {"all": {"vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}
    app_hosts = {}
    for i, host in enumerate(hosts):
        deploy_to = root / host / "app"
        for n, name in enumerate(RELEASES):
            rel = deploy_to / "releases" / name
            rel.mkdir(parents=True)
            (rel / "REVISION").write_text(f"abc{n}\n")
        (deploy_to / "shared" / "log").mkdir(parents=True)
        (deploy_to / "shared" / "log" / "app.log").write_text("keep\n")
        os.symlink(f"./releases/{RELEASES[-1]}", deploy_to / "current")
        # The oldest release was touched last (a backup, an rsync): mtime says it is the newest.
        os.utime(deploy_to / "releases" / RELEASES[0], (2_000_000_000 + i, 2_000_000_000 + i))
        app_hosts[host] = {"deploy_to": str(deploy_to)}
    inv["all"]["children"] = {"app": {"hosts": app_hosts}}
    (root / "inventory.yml").write_text(yaml.safe_dump(inv))
    hooks = root / "hooks"
    hooks.mkdir()
    for name in ("before-setup", "after-setup", "before-symlink", "after-symlink", "before-cleanup", "after-cleanup"):
        (hooks / f"{name}.yml").write_text(HOOK.format(name=name))
    return root


def run_playbook(root: Path, *extra: str) -> subprocess.CompletedProcess:
    book = root / "rollback.yml"
    # The one line a user changes.
    book.write_text(
        ANSISTRANO_PLAYBOOK.replace("role: ansistrano.rollback", "role: release.rollback.ansistrano_rollback")
    )
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    return subprocess.run(
        ["ansible-playbook", "-i", str(root / "inventory.yml"), str(book), *extra],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_default_rollback_picks_the_previous_release_by_name_and_removes_the_rolled_back_one(tmp_path):
    root = deployed_fleet(tmp_path)
    proc = run_playbook(root)
    assert proc.returncode == 0, proc.stdout[-3000:]
    for host in ("web1", "web2"):
        app = root / host / "app"
        assert os.readlink(app / "current") == f"./releases/{RELEASES[2]}"  # by name, not the touched oldest
        assert not (app / "releases" / RELEASES[3]).exists()  # ansistrano's documented default
        assert (app / "shared" / "log" / "app.log").read_text() == "keep\n"
        lines = (root / host / "hooks.log").read_text().splitlines()
        assert [line.split()[0] for line in lines] == [
            "before-setup",
            "after-setup",
            "before-symlink",
            "after-symlink",
            "before-cleanup",
            "after-cleanup",
        ]
        path = f"path={app}/releases/{RELEASES[2]}"
        assert (
            lines[1] == f"after-setup current={RELEASES[3]} rollback={RELEASES[2]} {path} link=./releases/{RELEASES[3]}"
        )
        assert lines[3].endswith(f"link=./releases/{RELEASES[2]}")


def test_explicit_release_without_removal_keeps_the_rolled_back_release_marked(tmp_path):
    root = deployed_fleet(tmp_path)
    proc = run_playbook(
        root, "-e", f"ansistrano_rollback_to_release={RELEASES[0]}", "-e", "ansistrano_remove_rolled_back=false"
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    for host in ("web1", "web2"):
        app = root / host / "app"
        assert os.readlink(app / "current") == f"./releases/{RELEASES[0]}"
        assert (app / "releases" / RELEASES[3] / "ROLLED_BACK").is_file()
    # A release that does not exist fails with ansistrano's message, and nothing changes.
    proc = run_playbook(root, "-e", "ansistrano_rollback_to_release=20990101000000Z")
    assert proc.returncode != 0
    assert "Specified rollback version does not exist" in proc.stdout
    assert os.readlink(root / "web1" / "app" / "current") == f"./releases/{RELEASES[0]}"
