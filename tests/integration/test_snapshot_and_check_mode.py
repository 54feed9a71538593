"""The deployment snapshot a deploy records, and `--check --diff` of the switch, with ansible-playbook."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import yaml
from release_rollback.demo import BAD, GOOD, build_fleet

ROOT = Path(__file__).resolve().parents[2]


def playbook(inventory: Path, book: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    return subprocess.run(
        ["ansible-playbook", "-i", str(inventory), str(book), *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_deploy_records_its_snapshot_and_check_diff_shows_the_rollback_without_changing_anything(tmp_path):
    fleet = build_fleet(tmp_path / "fleet", 2, start=False)
    for host in fleet.hosts:  # as if the deploy of the bad release had not recorded anything yet
        (fleet.app_root(host) / "snapshots" / BAD).rename(tmp_path / f"{host}-old-snapshot")
    extra = json.dumps({"rollback_snapshot_db_revision": "a1", "rollback_snapshot_flags": ["new-checkout"]})
    proc = playbook(fleet.inventory, ROOT / "playbooks" / "snapshot.yml", "-e", extra)
    assert proc.returncode == 0, proc.stdout[-3000:]
    for host, host_dir in fleet.hosts.items():
        snaps = fleet.app_root(host) / "snapshots" / BAD
        record = json.loads((snaps / "record.json").read_text())
        assert record["release"] == BAD and record["previous"] == GOOD
        assert record["db_revision_before"] == "a1" and record["flags"] == ["new-checkout"]
        conf = host_dir / "etc" / "app.conf"
        assert (snaps / "files" / str(conf).lstrip("/")).read_text() == conf.read_text()

    # --check --diff: what the switch would change, and nothing changes.
    before = {h: (fleet.live(h), (d / "etc" / "app.conf").read_text()) for h, d in fleet.hosts.items()}
    book = tmp_path / "switch.yml"
    book.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "Switch back",
                    "hosts": "app",
                    "gather_facts": False,
                    "tasks": [
                        {
                            "name": "Switch",
                            "release.rollback.release_switch": {
                                "app_root": "{{ rollback_app_root }}",
                                "target": GOOD,
                                "config_files": "{{ rollback_config_files }}",
                            },
                        }
                    ],
                }
            ]
        )
    )
    proc = playbook(fleet.inventory, book, "--check", "--diff")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert f"+-> ./releases/{GOOD}" in proc.stdout and f"--> ./releases/{BAD}" in proc.stdout
    assert "-checkout = new" in proc.stdout and "+checkout = classic" in proc.stdout
    assert "changed=1" in proc.stdout
    assert before == {h: (fleet.live(h), (d / "etc" / "app.conf").read_text()) for h, d in fleet.hosts.items()}
    assert not list(fleet.root.glob("hosts/*/app/releases/*/ROLLED_BACK"))
