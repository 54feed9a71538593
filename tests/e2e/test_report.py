"""The report a Release Manager signs off on, and the audit trail behind it, through the CLI.

One real rollback of a two-host demo fleet (module-scoped: it takes half a minute) feeds every
test; tests that change the run work on a copy of its directory.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from browser import chromium, screenshot
from conftest import ROOT, Cli
from release_rollback import content
from release_rollback.demo import build_fleet

pytestmark = pytest.mark.e2e

STAGES = content.module_utils("stages").STAGE_NAMES


@pytest.fixture(scope="module")
def rolled_back(tmp_path_factory, ansible_home):
    """A completed rollback of a real two-host fleet: ``(cli, run_dir)``."""
    root = tmp_path_factory.mktemp("report-run")
    fleet = build_fleet(root / "fleet", 2)
    try:
        cli = Cli(root / "runs", root)
        done = cli("run", "-i", str(fleet.inventory), "-m", str(fleet.manifest), "--approver", "alice", "--yes")
        assert done.returncode == 0, done.stdout + done.stderr
        (run_dir,) = cli.run_dirs()
        yield cli, run_dir
    finally:
        subprocess.run(["chattr", "-i", str(fleet.flags)], capture_output=True)
        fleet.stop()


@pytest.fixture
def run_copy(rolled_back, tmp_path):
    _cli, run_dir = rolled_back
    copy = tmp_path / "runs" / run_dir.name
    shutil.copytree(run_dir, copy)
    return Cli(tmp_path / "runs", tmp_path), copy


def test_html_report_renders_offline_with_a_timeline_naming_every_stage_and_host(rolled_back, tmp_path):
    cli, run_dir = rolled_back
    shown = cli("report", str(run_dir), "--format", "html")
    assert shown.returncode == 0, shown.stderr
    page = run_dir / "report.html"
    assert shown.stdout == page.read_text()
    # Self-contained: no script, stylesheet, image or font is fetched from anywhere.
    assert not re.search(r"""(src|href)\s*=|@import|url\(""", shown.stdout)

    dom = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    rows = re.findall(r'class="tl-row stage" data-stage="([a-z_]+)" data-status="([a-z ]+)"', dom.stdout)
    assert [name for name, _ in rows] == list(STAGES)
    assert {status for _, status in rows} == {"ok"}
    for host in ("web1", "web2", "db1", "lb1"):
        assert f'data-host="{host}"' in dom.stdout
    assert "awaiting sign-off" in dom.stdout
    assert re.search(r"Most time: \w+ \([\d.]+ s\)", dom.stdout)

    screenshot(tmp_path, page, "report-timeline-completed.png")


def test_markdown_and_json_reports_come_from_the_same_data(rolled_back):
    cli, run_dir = rolled_back
    as_json = json.loads(cli("report", str(run_dir), "--format", "json").stdout)
    as_md = cli("report", str(run_dir)).stdout
    assert as_json["exit_state"] == "completed"
    assert [row["stage"] for row in as_json["timeline"]] == list(STAGES)
    code = next(row for row in as_json["timeline"] if row["stage"] == "code_config")
    assert {h["host"] for h in code["hosts"]} == {"web1", "web2"}
    assert all(h["duration_s"] > 0 for h in code["hosts"])
    assert as_json["release_record"] == {
        "version": as_json["from_version"],
        "status": "rolled back",
        "known_bad": True,
        "previous_known_good": as_json["to_version"],
    }
    assert "- **Sign-off:** awaiting sign-off" in as_md
    assert "## Timeline" in as_md
    # Time to restore, from the approval: first host, every host, validated, in that order.
    ttr = as_json["time_to_restore"]
    assert ttr["approved"].startswith(as_json["approval"]["time"][:19])
    seconds = [ttr[k]["seconds"] for k in ("first_host_restored", "all_hosts_restored", "validated")]
    assert None not in seconds and 0 <= seconds[0] <= seconds[1] <= seconds[2], ttr
    last_host = max(h["ended"] for h in code["hosts"])
    assert ttr["all_hosts_restored"]["at"] == last_host
    assert f"every host restored {seconds[1]:.1f} s, validated {seconds[2]:.1f} s." in as_md
    (recorded,) = [json.loads(x) for x in (run_dir.parent.parent / "releases.jsonl").read_text().splitlines()]
    assert recorded == dict(
        recorded, version=as_json["from_version"], status="rolled_back", known_bad=True, run_id=run_dir.name
    )


def test_signoff_lands_in_the_report_and_the_audit_trail(run_copy):
    cli, run_dir = run_copy
    assert "awaiting sign-off" in (run_dir / "report.md").read_text()
    signed = cli("signoff", str(run_dir), "--by", "Rita Release", "--note", "monitoring quiet for 30 min")
    assert signed.returncode == 0, signed.stderr
    assert "Signed off by Rita Release" in signed.stdout
    for name in ("report.md", "report.html"):
        text = (run_dir / name).read_text()
        assert "signed off by Rita Release at " in text
        assert "awaiting sign-off" not in text
    entries = [json.loads(line) for line in (run_dir / "audit.jsonl").read_text().splitlines()]
    assert entries[-1]["event"] == "signoff.recorded"
    assert entries[-1]["by"] == "Rita Release" and entries[-1]["exit_state"] == "completed"
    assert cli("audit", "verify", str(run_dir)).returncode == 0
    assert "sign-off:   signed off by Rita Release at " in cli("status", str(run_dir)).stdout

    again = cli("signoff", str(run_dir), "--by", "Someone Else")
    assert again.returncode == 2
    assert "already signed off by Rita Release" in again.stderr


def test_signoff_refuses_a_partial_rollback_unless_its_gaps_are_accepted(run_copy):
    cli, run_dir = run_copy
    state = json.loads((run_dir / "state.json").read_text())
    validate = state["stages"]["validate"]["result"]
    validate.update(status="failed", summary="failed on web2: /health answered 500")
    (run_dir / "state.json").write_text(json.dumps(state))
    refused = cli("signoff", str(run_dir), "--by", "Rita")
    assert refused.returncode == 2
    assert "--accept-gaps" in refused.stderr
    assert not (run_dir / "signoff.json").exists()
    accepted = cli("signoff", str(run_dir), "--by", "Rita", "--accept-gaps")
    assert accepted.returncode == 0, accepted.stderr
    record = json.loads((run_dir / "signoff.json").read_text())
    assert record["accepted_gaps"] is True and record["exit_state"] == "partially completed"
    assert "signed off by Rita" in (run_dir / "report.md").read_text()


# ----------------------------------------------------------------------------------- audit verify
def _lines(run_dir: Path) -> list[str]:
    return (run_dir / "audit.jsonl").read_text().splitlines(keepends=True)


def _write_lines(run_dir: Path, lines: list[str]) -> None:
    (run_dir / "audit.jsonl").write_text("".join(lines))


def test_audit_verify_passes_an_intact_trail(run_copy):
    cli, run_dir = run_copy
    ok = cli("audit", "verify", str(run_dir))
    assert ok.returncode == 0, ok.stderr
    assert f"audit trail intact: {len(_lines(run_dir))} entries" in ok.stdout


def test_audit_verify_names_an_edited_line(run_copy):
    cli, run_dir = run_copy
    lines = _lines(run_dir)
    index = next(i for i, line in enumerate(lines) if '"approval.recorded"' in line)
    assert '"approver":"alice"' in lines[index]
    lines[index] = lines[index].replace('"approver":"alice"', '"approver":"mallory"')
    _write_lines(run_dir, lines)
    broken = cli("audit", "verify", str(run_dir))
    assert broken.returncode != 0
    assert f"audit trail broken at line {index + 1}: line {index + 1} was edited" in broken.stderr


def test_audit_verify_names_the_line_after_a_deleted_one(run_copy):
    cli, run_dir = run_copy
    lines = _lines(run_dir)
    del lines[3]
    _write_lines(run_dir, lines)
    broken = cli("audit", "verify", str(run_dir))
    assert broken.returncode != 0
    assert "audit trail broken at line 4: line 4 does not follow line 3" in broken.stderr


def test_audit_verify_catches_the_last_line_deleted(run_copy):
    cli, run_dir = run_copy
    lines = _lines(run_dir)
    _write_lines(run_dir, lines[:-1])
    broken = cli("audit", "verify", str(run_dir))
    assert broken.returncode != 0
    assert f"broken at line {len(lines)}" in broken.stderr and "lines were removed" in broken.stderr


def test_audit_verify_names_a_reordered_line(run_copy):
    cli, run_dir = run_copy
    lines = _lines(run_dir)
    lines[4], lines[5] = lines[5], lines[4]
    _write_lines(run_dir, lines)
    broken = cli("audit", "verify", str(run_dir))
    assert broken.returncode != 0
    assert "audit trail broken at line 5: line 5 does not follow line 4" in broken.stderr


def test_the_signoff_playbook_for_awx_records_the_same_signoff(run_copy, tmp_path):
    cli, run_dir = run_copy
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(ROOT / "collections"), ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    cmd = [
        str(Path(sys.executable).parent / "ansible-playbook"),
        str(ROOT / "playbooks" / "signoff.yml"),
        "-e",
        json.dumps(
            {
                "rollback_run_dir": str(run_dir),
                "rollback_signed_off_by": "Dana DevOps",
                "rollback_signoff_role": "devops lead",
            }
        ),
    ]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
    record = json.loads((run_dir / "signoff.json").read_text())
    assert record["by"] == "Dana DevOps" and record["role"] == "devops lead"
    assert "signed off by Dana DevOps" in (run_dir / "report.html").read_text()
    assert cli("audit", "verify", str(run_dir)).returncode == 0
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode != 0
    assert "already signed off by Dana DevOps" in again.stdout
