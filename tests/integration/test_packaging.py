"""A non-editable install carries the collection and the playbooks, and the driver finds them there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_install_runs_the_plan_from_site_packages(tmp_path, fleet):
    wheel_dir = tmp_path / "wheel"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheel_dir), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = wheel_dir.glob("release_rollback-*.whl")
    # A venv that sees this environment's dependencies, with the wheel installed on top of it.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    site = subprocess.run(
        [
            sys.executable,
            "-c",
            "import ansible_runner, os; print(os.path.dirname(os.path.dirname(ansible_runner.__file__)))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    pth = next((venv / "lib").glob("python3*/site-packages"))
    (pth / "deps.pth").write_text(site + "\n")
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "from release_rollback import content; print(content.root())"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout.strip()
    assert where.startswith(str(pth)) and where.endswith("_content")
    for part in (
        "collections/ansible_collections/release/rollback/playbooks/rollback.yml",
        "collections/ansible_collections/release/rollback/galaxy.yml",
        "collections/ansible_collections/release/rollback/plugins/modules/release_switch.py",
        "inventories/demo/group_vars/all.yml",
    ):
        assert (Path(where) / part).is_file(), part
    env = dict(os.environ, PATH=str(venv / "bin") + os.pathsep + os.environ["PATH"])
    proc = subprocess.run(
        [
            str(venv / "bin" / "release-rollback"),
            "--runs-dir",
            str(tmp_path / "runs"),
            "plan",
            "-i",
            str(fleet.inventory),
            "-m",
            str(fleet.manifest),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{fleet.bad} -> {fleet.good}" in proc.stdout
