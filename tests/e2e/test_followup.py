"""Notifications and the RCA ticket of real rollbacks, through the CLI and through ansible-playbook.

The tracker is down during the run: the rollback still completes, the report says "RCA pending",
and `release-rollback rca RUN_DIR` files the ticket once the tracker answers again.
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
import yaml
from browser import chromium, screenshot
from conftest import ROOT, need
from replay import JIRA_DOWN, SLACK_OK, ReplayServer, SmtpSink, github_created, jira_created

pytestmark = pytest.mark.e2e

SLACK_PATH = "/services/T000/B000/e2eXXXXXXXXXXXXXXXX"
JIRA_PATH = "/jira/rest/api/3/issue"


@pytest.fixture
def http():
    server = ReplayServer().start()
    yield server
    server.stop()


@pytest.fixture
def smtp():
    try:
        import aiosmtpd  # noqa: F401
    except ImportError:
        need(False, "aiosmtpd (pip install aiosmtpd)")
    sink = SmtpSink().start()
    yield sink
    sink.stop()


def _configure(fleet, http, smtp, monkeypatch) -> None:
    """Add notify: and rca: to the fleet's manifest; the secrets go into the environment only."""
    monkeypatch.setenv("E2E_SLACK_URL", http.url + SLACK_PATH)
    monkeypatch.setenv("E2E_JIRA_USER", "bot@example.com")
    monkeypatch.setenv("E2E_JIRA_TOKEN", "e2e-jira-secret-token")
    doc = yaml.safe_load(fleet.manifest.read_text())
    doc["rollback_manifest"]["notify"] = {
        "report_url": "https://ops.example.com/rollbacks/{run_id}/report.html",
        "channels": [
            {"kind": "slack", "url_env": "E2E_SLACK_URL"},
            {
                "kind": "email",
                "host": "127.0.0.1",
                "port": smtp.port,
                "from": "rb@example.com",
                "to": ["rm@example.com"],
            },
        ],
    }
    doc["rollback_manifest"]["rca"] = {
        "kind": "jira",
        "api": 3,
        "url": http.url + "/jira",
        "project": "OPS",
        "user_env": "E2E_JIRA_USER",
        "token_env": "E2E_JIRA_TOKEN",
    }
    fleet.manifest.write_text(yaml.safe_dump(doc, sort_keys=False))


def _slack_headlines(http) -> list[str]:
    return [r.json()["text"].splitlines()[0].split(":")[0] for r in http.to(SLACK_PATH)]


def _no_secret_in(run_dir: Path) -> None:
    for path in run_dir.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            assert "e2e-jira-secret-token" not in text, path
            assert SLACK_PATH not in text, path


def test_tracker_down_leaves_the_rollback_completed_with_rca_pending_then_rca_files_it(
    fleet, cli, http, smtp, monkeypatch
):
    _configure(fleet, http, smtp, monkeypatch)
    http.answer(SLACK_PATH, SLACK_OK)
    http.answer(JIRA_PATH, JIRA_DOWN)

    done = cli("run", "-i", str(fleet.inventory), "-m", str(fleet.manifest), "--approver", "alice", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    (run_dir,) = cli.run_dirs()
    assert "  RCA: RCA pending (Jira answered HTTP 503" in done.stdout
    assert _slack_headlines(http) == ["Rollback started", "Rollback completed"]
    completed = http.to(SLACK_PATH)[1].json()["text"]
    assert f"Report: https://ops.example.com/rollbacks/{run_dir.name}/report.html" in completed
    assert [m["message"]["Subject"].split(":")[0] for m in smtp.messages] == ["Rollback started", "Rollback completed"]
    assert len(http.to(JIRA_PATH)) == 1
    for name in ("report.md", "report.html"):
        assert "RCA pending (Jira answered HTTP 503" in (run_dir / name).read_text()
    assert json.loads((run_dir / "report.json").read_text())["exit_state"] == "completed"

    http.queued[JIRA_PATH].clear()
    http.answer(JIRA_PATH, jira_created("OPS-77", api=3))
    filed = cli("rca", str(run_dir))
    assert filed.returncode == 0, filed.stderr
    assert filed.stdout.strip() == f"RCA ticket OPS-77 (jira): {http.url}/jira/browse/OPS-77"
    report_md = (run_dir / "report.md").read_text()
    assert f"RCA ticket OPS-77 filed in jira: {http.url}/jira/browse/OPS-77" in report_md
    assert "RCA pending" not in report_md
    assert _slack_headlines(http) == ["Rollback started", "Rollback completed", "RCA initiated"]
    issue = http.to(JIRA_PATH)[-1].json()["fields"]
    assert issue["project"] == {"key": "OPS"} and issue["description"]["type"] == "doc"

    trail = [json.loads(line) for line in (run_dir / "audit.jsonl").read_text().splitlines()]
    events = [e["event"] for e in trail]
    assert events.index("rca.pending") < events.index("rca.filed")
    assert {(e["about"], e["kind"]) for e in trail if e["event"] == "notification"} >= {
        ("started", "slack"),
        ("completed", "email"),
        ("rca initiated", "slack"),
    }
    assert cli("audit", "verify", str(run_dir)).returncode == 0
    assert cli("rca", str(run_dir)).returncode == 0  # already filed: no second ticket
    assert len(http.to(JIRA_PATH)) == 2
    _no_secret_in(run_dir)


def test_the_playbook_path_notifies_and_files_the_ticket_with_the_same_code(fleet, http, smtp, monkeypatch, tmp_path):
    _configure(fleet, http, smtp, monkeypatch)
    http.answer(SLACK_PATH, SLACK_OK)
    http.answer(JIRA_PATH, jira_created("OPS-78", api=3))
    run_dir = tmp_path / "pb-run"
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(ROOT / "collections"), ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env["PATH"]
    done = subprocess.run(
        [
            "ansible-playbook",
            "-i",
            str(fleet.inventory),
            str(ROOT / "playbooks" / "rollback.yml"),
            "-e",
            f"@{fleet.manifest}",
            "-e",
            "rollback_approved_by=alice",
            "-e",
            f"rollback_run_dir={run_dir}",
            "-e",
            f"rollback_release_record={tmp_path / 'releases.jsonl'}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert _slack_headlines(http) == ["Rollback started", "Rollback completed", "RCA initiated"]
    assert len(smtp.messages) == 3
    assert json.loads((run_dir / "rca.json").read_text())["key"] == "OPS-78"
    assert "RCA ticket OPS-78 filed in jira" in (run_dir / "report.md").read_text()
    assert (run_dir / "report.html").is_file()
    _no_secret_in(run_dir)


def test_a_partial_rollback_is_announced_with_its_gaps_and_its_github_issue_lists_them(
    fleet, cli, http, monkeypatch, tmp_path
):
    need(shutil.which("chattr") is not None, "chattr (e2fsprogs)")
    monkeypatch.setenv("E2E_SLACK_URL", http.url + SLACK_PATH)
    monkeypatch.setenv("E2E_GITHUB_TOKEN", "ghp_e2e_secret_token")
    doc = yaml.safe_load(fleet.manifest.read_text())
    doc["rollback_manifest"]["notify"] = {"channels": [{"kind": "slack", "url_env": "E2E_SLACK_URL"}]}
    doc["rollback_manifest"]["rca"] = {
        "kind": "github",
        "repo": "acme/shop",
        "api_url": http.url + "/gh",
        "token_env": "E2E_GITHUB_TOKEN",
    }
    fleet.manifest.write_text(yaml.safe_dump(doc, sort_keys=False))
    http.answer(SLACK_PATH, SLACK_OK)
    http.answer("/gh/repos/acme/shop/issues", github_created("acme/shop", 7))
    # The flag system cannot be changed: the flags stage fails, the rest of the rollback goes on.
    subprocess.run(["chattr", "+i", str(fleet.flags)], check=True)

    done = cli("run", "-i", str(fleet.inventory), "-m", str(fleet.manifest), "--approver", "alice", "--yes")
    assert done.returncode == 5, done.stdout + done.stderr
    (run_dir,) = cli.run_dirs()
    assert _slack_headlines(http) == ["Rollback started", "Rollback partially completed", "RCA initiated"]
    partial = http.to(SLACK_PATH)[1].json()["text"]
    assert "feature_flags: " in partial.split("Reason: ", 1)[1]
    # The action names the run's real directory, ready to paste.
    run_dir = cli.run_dirs()[-1]
    assert (
        f"Required action: Stage feature_flags: fix the cause above, then resume the run. `release-rollback resume "
        f"{run_dir}`" in partial
    )
    (req,) = http.to("/gh/repos/acme/shop/issues")
    issue = req.json()
    assert issue["title"].endswith("(partially completed)")
    gaps = issue["body"].split("Gaps this RCA must cover (the rollback did not finish these):\n", 1)[1]
    assert gaps.startswith("- feature_flags: ")

    page = run_dir / "report.html"
    dom = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    flags_row = re.search(r'class="tl-row stage" data-stage="feature_flags" data-status="([a-z]+)"', dom.stdout)
    assert flags_row and flags_row.group(1) in ("failed", "unavailable")
    assert re.search(r"<h2>What failed</h2>\s*<ul><li>feature_flags on localhost: ", dom.stdout)
    assert "RCA ticket acme/shop#7 filed in github: https://github.com/acme/shop/issues/7" in dom.stdout
    screenshot(tmp_path, page, "report-timeline-partial.png")
    _no_secret_in(run_dir)
