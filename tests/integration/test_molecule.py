"""Every molecule scenario (molecule/<role>/: default driver, localhost) passes `molecule test`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SCENARIOS = sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))


def test_there_are_scenarios():
    assert {"assess", "code_config", "ansistrano_rollback"} <= set(SCENARIOS)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_molecule_scenario_passes(scenario, tmp_path, need):
    need((BIN / "molecule").exists(), "molecule (the test extra)")
    env = dict(
        os.environ,
        ANSIBLE_HOME=str(tmp_path / "ansible-home"),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        MOLECULE_NO_LOG="false",
        NO_COLOR="1",
        # CI machines cannot reach Galaxy: a scenario must not need it (molecule's prerun would
        # install collections/requirements.yml from it), so the tests see an unreachable server.
        ANSIBLE_GALAXY_SERVER="http://127.0.0.1:9/",
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    proc = subprocess.run(
        [str(BIN / "molecule"), "test", "-s", scenario],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    actions = ["converge", "verify"] + [a for a in ("prepare",) if (ROOT / "molecule" / scenario / f"{a}.yml").exists()]
    for action in actions:
        assert f"{action}: Executed: Successful" in out, f"{scenario}: {action} did not run successfully"
