"""The flag stage on the demo fleet's flagd file: an unwritable file is *unavailable*, the run goes
on to code and ends partially completed with the flag listed as left on; resume then turns it off,
changing no byte of the file outside the release's flag."""

from __future__ import annotations

import json
import subprocess

import pytest
from release_rollback import content

flagd = content.module_utils("flagd")


def _outside(text: str, name: str) -> str:
    start, end = flagd.flag_spans(text)[name]
    return text[:start] + "\x00" + text[end:]


@pytest.mark.e2e
def test_an_immutable_flag_file_is_unavailable_then_resume_turns_the_flag_off_surgically(fleet, cli):
    original = fleet.flags.read_text()
    subprocess.run(["chattr", "+i", str(fleet.flags)], check=True)
    try:
        first = cli("run", "-i", str(fleet.inventory), "-m", str(fleet.manifest), "--approver", "alice", "--yes")
    finally:
        subprocess.run(["chattr", "-i", str(fleet.flags)], check=True)
    assert first.returncode == 5, first.stdout + first.stderr
    (run_dir,) = cli.run_dirs()
    state = json.loads((run_dir / "state.json").read_text())
    flags_result = state["stages"]["feature_flags"]["result"]
    assert flags_result["status"] == "unavailable"
    assert "cannot be written" in flags_result["summary"]
    assert state["stages"]["code_config"]["result"]["status"] == "ok", "the code rollback goes on"
    assert fleet.flags.read_text() == original
    report = (run_dir / "report.md").read_text()
    assert "flags left on: new-checkout" in report and "LEFT ON" in report

    second = cli("resume", str(run_dir))
    assert second.returncode == 0, second.stdout + second.stderr
    assert fleet.flag()["defaultVariant"] == "off" and "targeting" not in fleet.flag()
    after = fleet.flags.read_text()
    assert _outside(after, "new-checkout") == _outside(original, "new-checkout")
    assert json.loads(after)["flags"]["dark-mode"] == json.loads(original)["flags"]["dark-mode"]
    rep = json.loads((run_dir / "report.json").read_text())
    assert rep["flags"]["new-checkout"]["before"]["defaultVariant"] == "on"
    assert rep["flags"]["new-checkout"]["after"]["off"] is True
