"""The molecule scenario of the ansistrano drop-in role (driver default, localhost)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_molecule_scenario_of_the_ansistrano_dropin_passes(need, tmp_path):
    need(shutil.which("molecule", path=str(BIN)) is not None, "molecule (PyPI) in the venv")
    env = dict(
        os.environ,
        PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",
        ANSIBLE_HOME=str(tmp_path / "ansible-home"),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
    )
    proc = subprocess.run(
        [str(BIN / "molecule"), "test", "-s", "ansistrano_rollback"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "verify" in out and "failed=0" in out
