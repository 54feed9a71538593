"""Notifications and the RCA ticket against real servers: aiosmtpd for e-mail, and a local HTTP
server that checks the exact requests and replays the documented answers of Slack, Jira and GitHub.

These call the collection's shared implementation (module_utils ``followup``) directly, the way
both the driver and the report stage do.
"""

from __future__ import annotations

import base64
import json

import pytest
from release_rollback import content
from replay import (
    GITHUB_ISSUES_DISABLED,
    JIRA_BAD_REQUEST,
    JIRA_DOWN,
    SLACK_CHANNEL_NOT_FOUND,
    SLACK_OK,
    ReplayServer,
    SmtpSink,
    github_created,
    jira_created,
)

pytestmark = pytest.mark.integration

followup = content.module_utils("followup")
manifestlib = content.module_utils("manifest")
reportlib = content.module_utils("report")

SLACK_PATH = "/services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX"
SLACK_SECRET_ENV = "TEST_ROLLBACK_SLACK_URL"


@pytest.fixture
def http():
    server = ReplayServer().start()
    yield server
    server.stop()


@pytest.fixture
def smtp():
    need_aiosmtpd()
    sink = SmtpSink().start()
    yield sink
    sink.stop()


def need_aiosmtpd():
    from conftest import need

    try:
        import aiosmtpd  # noqa: F401
    except ImportError:
        need(False, "aiosmtpd (pip install aiosmtpd)")


def _report(exit_state="completed"):
    plan = {
        "run_id": "20261126T101500-0001",
        "app": "shop",
        "from_version": "2.0.0",
        "to_version": "1.9.3",
        "reason": "checkout errors after the deploy",
        "hash": "sha256:abc",
        "scope": ["code_config", "database"],
    }
    ok = {"status": "ok", "summary": "ok on 2 host(s)", "hosts": {}}
    results = {
        "assess": dict(ok, stage="assess"),
        "feature_flags": dict(ok, stage="feature_flags"),
        "code_config": dict(ok, stage="code_config"),
        "database": dict(ok, stage="database"),
        "infrastructure": dict(ok, stage="infrastructure"),
        "validate": dict(ok, stage="validate"),
        "report": dict(ok, stage="report"),
    }
    if exit_state == "partially completed":
        results["database"] = {
            "stage": "database",
            "status": "failed",
            "summary": "failed on db1: downgrade b2 -> a1 raised",
            "hosts": {"db1": {"status": "failed", "msg": "downgrade b2 -> a1 raised"}},
        }
    approval = {"approver": "alice", "time": "2026-11-26T10:15:00Z", "plan_hash": "sha256:abc"}
    rep = reportlib.build(plan, approval, results, run_id=plan["run_id"])
    assert rep["exit_state"] == exit_state
    return rep


def _manifest(**sections):
    return manifestlib.parse_manifest(dict({"app": "shop", "version": "2.0.0"}, **sections))


def _trail(run_dir):
    return [json.loads(line) for line in (run_dir / "audit.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------------ Slack
def test_slack_gets_the_exit_state_reason_action_and_report_link(http, tmp_path, monkeypatch):
    monkeypatch.setenv(SLACK_SECRET_ENV, http.url + SLACK_PATH)
    http.answer(SLACK_PATH, SLACK_OK)
    cfg = _manifest(
        notify={
            "report_url": "https://ops.example.com/rollbacks/{run_id}",
            "channels": [{"kind": "slack", "url_env": SLACK_SECRET_ENV}],
        }
    )
    rep = _report("partially completed")
    out = followup.after_run(str(tmp_path), cfg, rep)

    assert out["notifications"][0]["outcome"] == "sent"
    (req,) = http.to(SLACK_PATH)
    assert req.headers["content-type"] == "application/json; charset=utf-8"
    body = req.json()
    assert set(body) == {"text", "blocks"}
    text = body["text"]
    assert text.startswith("Rollback partially completed: shop 2.0.0 -> 1.9.3")
    assert "Reason: checkout errors after the deploy. database: failed on db1" in text
    assert "Required action: Stage database: fix the cause above, then resume the run." in text
    assert "Report: https://ops.example.com/rollbacks/20261126T101500-0001" in text
    assert body["blocks"][0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "Rollback partially completed: shop 2.0.0 -> 1.9.3"},
    }
    (entry,) = [e for e in _trail(tmp_path) if e["event"] == "notification"]
    assert entry["about"] == "partially completed" and entry["outcome"] == "sent"


def test_a_slack_error_answer_is_recorded_not_raised_and_the_url_stays_secret(http, tmp_path, monkeypatch):
    monkeypatch.setenv(SLACK_SECRET_ENV, http.url + SLACK_PATH)
    http.answer(SLACK_PATH, SLACK_CHANNEL_NOT_FOUND)
    cfg = _manifest(notify={"channels": [{"kind": "slack", "url_env": SLACK_SECRET_ENV}]})
    out = followup.after_run(str(tmp_path), cfg, _report())
    assert out["notifications"][0]["outcome"] == "failed: Slack answered HTTP 404: channel_not_found"
    trail = (tmp_path / "audit.jsonl").read_text()
    assert "channel_not_found" in trail
    assert "XXXXXXXX" not in trail and SLACK_PATH not in trail


def test_a_slack_url_written_into_the_manifest_is_refused():
    with pytest.raises(manifestlib.ManifestError, match=r"a Slack webhook URL is a secret.*url_env"):
        _manifest(notify={"channels": [{"kind": "slack", "url": "https://hooks.slack.com/services/T/B/X"}]})


# ---------------------------------------------------------------------------------------- webhook
def test_generic_webhook_gets_the_fields_and_the_bearer_token(http, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_HOOK_TOKEN", "s3cr3t-hook-token")
    http.answer("/hooks/rollback", (204, "text/plain", ""))
    cfg = _manifest(
        notify={"channels": [{"kind": "webhook", "url": http.url + "/hooks/rollback", "token_env": "TEST_HOOK_TOKEN"}]}
    )
    out = followup.announce(str(tmp_path), cfg["notify"], "started", _report())
    assert out[0]["outcome"] == "sent"
    (req,) = http.to("/hooks/rollback")
    assert req.headers["authorization"] == "Bearer s3cr3t-hook-token"
    body = req.json()
    assert body["event"] == "started" and body["source"] == "release-rollback"
    assert body["run_id"] == "20261126T101500-0001"
    assert body["report_url"] == f"file://{tmp_path}/report.html"
    assert "s3cr3t" not in (tmp_path / "audit.jsonl").read_text()


# ----------------------------------------------------------------------------------------- e-mail
def test_email_is_delivered_by_a_real_smtp_server(smtp, tmp_path):
    cfg = _manifest(
        notify={
            "channels": [
                {
                    "kind": "email",
                    "host": "127.0.0.1",
                    "port": smtp.port,
                    "from": "rollback@example.com",
                    "to": ["release-managers@example.com", "oncall@example.com"],
                }
            ]
        }
    )
    out = followup.after_run(str(tmp_path), cfg, _report())
    assert out["notifications"][0]["outcome"] == "sent"
    (got,) = smtp.messages
    assert got["mail_from"] == "rollback@example.com"
    assert got["rcpt_tos"] == ["release-managers@example.com", "oncall@example.com"]
    msg = got["message"]
    assert msg["Subject"] == "Rollback completed: shop 2.0.0 -> 1.9.3"
    assert msg["X-Rollback-Event"] == "completed"
    body = msg.get_content()
    assert "Reason: checkout errors after the deploy" in body
    assert "Required action: Watch the service's monitoring, then sign off" in body
    assert f"Report: file://{tmp_path}/report.html" in body


# ------------------------------------------------------------------------------------------- Jira
def _jira(http, api):
    return {
        "kind": "jira",
        "url": http.url + "/jira",
        "api": api,
        "project": "OPS",
        "user_env": "TEST_JIRA_USER",
        "token_env": "TEST_JIRA_TOKEN",
    }


def test_jira_v2_ticket_is_filed_with_a_plain_text_description(http, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_JIRA_USER", "bot@example.com")
    monkeypatch.setenv("TEST_JIRA_TOKEN", "jira-api-token")
    http.answer("/jira/rest/api/2/issue", jira_created("OPS-24"))
    cfg = _manifest(rca=_jira(http, 2))
    out = followup.after_run(str(tmp_path), cfg, _report())

    assert out["rca"] == dict(
        out["rca"], status="filed", tracker="jira", key="OPS-24", url=http.url + "/jira/browse/OPS-24"
    )
    (req,) = http.to("/jira/rest/api/2/issue")
    assert req.headers["authorization"] == "Basic " + base64.b64encode(b"bot@example.com:jira-api-token").decode()
    fields = req.json()["fields"]
    assert fields["project"] == {"key": "OPS"}
    assert fields["issuetype"] == {"name": "Task"}
    assert fields["summary"] == "RCA: shop release 2.0.0 rolled back to 1.9.3 (completed)"
    assert isinstance(fields["description"], str)
    assert "Report: file://" in fields["description"]
    assert fields["labels"] == ["rollback", "rca"]
    events = [e["event"] for e in _trail(tmp_path)]
    assert "rca.filed" in events
    assert json.loads((tmp_path / "rca.json").read_text())["key"] == "OPS-24"


def test_jira_cloud_v3_ticket_has_an_adf_description_listing_the_gaps(http, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_JIRA_USER", "bot@example.com")
    monkeypatch.setenv("TEST_JIRA_TOKEN", "jira-api-token")
    http.answer("/jira/rest/api/3/issue", jira_created("OPS-25", api=3))
    cfg = _manifest(rca=_jira(http, 3))
    out = followup.after_run(str(tmp_path), cfg, _report("partially completed"))
    assert out["rca"]["key"] == "OPS-25"
    (req,) = http.to("/jira/rest/api/3/issue")
    doc = req.json()["fields"]["description"]
    assert doc["type"] == "doc" and doc["version"] == 1
    paragraphs = [c["content"][0]["text"] for c in doc["content"] if c["type"] == "paragraph"]
    assert "Gaps this RCA must cover (the rollback did not finish these):" in paragraphs
    gaps = next(c for c in doc["content"] if c["type"] == "bulletList")
    first = gaps["content"][0]["content"][0]["content"][0]["text"]
    assert first.startswith("database: failed on db1: downgrade b2 -> a1 raised")


def test_a_jira_error_leaves_the_rca_pending_with_jiras_reason(http, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_JIRA_TOKEN", "jira-api-token")
    http.answer("/jira/rest/api/2/issue", JIRA_BAD_REQUEST)
    cfg = _manifest(rca=dict(_jira(http, 2), user_env=None))
    out = followup.after_run(str(tmp_path), cfg, _report())
    assert out["rca"]["status"] == "pending"
    assert out["rca"]["error"] == "Jira answered HTTP 400: issuetype: The issue type selected is invalid."
    (req,) = http.to("/jira/rest/api/2/issue")
    assert req.headers["authorization"] == "Bearer jira-api-token"  # Data Center personal access token
    md = reportlib.render_markdown(reportlib.build_for_run(str(tmp_path), {}, None, {}))
    assert "RCA pending (Jira answered HTTP 400" in md


def test_a_tracker_down_then_back_files_the_ticket_once_and_announces_it(http, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_JIRA_TOKEN", "jira-api-token")
    monkeypatch.setenv(SLACK_SECRET_ENV, http.url + SLACK_PATH)
    http.answer(SLACK_PATH, SLACK_OK)
    http.answer("/jira/rest/api/2/issue", JIRA_DOWN)
    cfg = _manifest(
        rca=dict(_jira(http, 2), user_env=None),
        notify={"channels": [{"kind": "slack", "url_env": SLACK_SECRET_ENV}]},
    )
    rep = _report()
    first = followup.after_run(str(tmp_path), cfg, rep)
    assert first["rca"]["status"] == "pending" and "HTTP 503" in first["rca"]["error"]
    http.queued["/jira/rest/api/2/issue"].clear()
    http.answer("/jira/rest/api/2/issue", jira_created("OPS-26"))
    second = followup.file_rca(str(tmp_path), cfg["rca"], cfg["notify"], rep)
    assert second["status"] == "filed" and second["attempts"] == 2
    again = followup.file_rca(str(tmp_path), cfg["rca"], cfg["notify"], rep)
    assert again == second
    assert len(http.to("/jira/rest/api/2/issue")) == 2
    slack = [r.json()["text"].splitlines()[0] for r in http.to(SLACK_PATH)]
    assert slack == ["Rollback completed: shop 2.0.0 -> 1.9.3", "RCA initiated: shop 2.0.0 -> 1.9.3"]
    assert "Ticket: OPS-26 " in http.to(SLACK_PATH)[1].json()["text"]


# ----------------------------------------------------------------------------------------- GitHub
def test_github_issue_for_a_partial_rollback_lists_its_gaps(http, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_GITHUB_TOKEN", "ghp_testtoken")
    http.answer("/api/repos/acme/shop/issues", github_created("acme/shop", 1347))
    cfg = _manifest(
        rca={"kind": "github", "repo": "acme/shop", "api_url": http.url + "/api", "token_env": "TEST_GITHUB_TOKEN"}
    )
    out = followup.after_run(str(tmp_path), cfg, _report("partially completed"))
    assert out["rca"]["key"] == "acme/shop#1347"
    assert out["rca"]["url"] == "https://github.com/acme/shop/issues/1347"
    (req,) = http.to("/api/repos/acme/shop/issues")
    assert req.headers["authorization"] == "Bearer ghp_testtoken"
    assert req.headers["accept"] == "application/vnd.github+json"
    assert req.headers["x-github-api-version"] == "2022-11-28"
    issue = req.json()
    assert set(issue) == {"title", "body", "labels"}
    assert issue["title"] == "RCA: shop release 2.0.0 rolled back to 1.9.3 (partially completed)"
    assert "Gaps this RCA must cover" in issue["body"]
    assert "- database: failed on db1: downgrade b2 -> a1 raised" in issue["body"]


def test_github_with_issues_disabled_leaves_the_rca_pending(http, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_GITHUB_TOKEN", "ghp_testtoken")
    http.answer("/api/repos/acme/shop/issues", GITHUB_ISSUES_DISABLED)
    cfg = _manifest(
        rca={"kind": "github", "repo": "acme/shop", "api_url": http.url + "/api", "token_env": "TEST_GITHUB_TOKEN"}
    )
    out = followup.after_run(str(tmp_path), cfg, _report())
    assert out["rca"]["error"] == "GitHub answered HTTP 410: Issues are disabled for this repo"
    assert "ghp_testtoken" not in (tmp_path / "audit.jsonl").read_text() + (tmp_path / "rca.json").read_text()


def test_a_blocked_run_is_announced_but_files_no_ticket(http, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_JIRA_TOKEN", "jira-api-token")
    monkeypatch.setenv(SLACK_SECRET_ENV, http.url + SLACK_PATH)
    http.answer(SLACK_PATH, SLACK_OK)
    cfg = _manifest(
        rca=dict(_jira(http, 2), user_env=None),
        notify={"channels": [{"kind": "slack", "url_env": SLACK_SECRET_ENV}]},
    )
    rep = reportlib.build({"app": "shop", "reason": "r"}, None, {"assess": {"status": "blocked"}})
    out = followup.after_run(str(tmp_path), cfg, rep)
    assert out["rca"] is None and not http.to("/jira/rest/api/2/issue")
    assert http.to(SLACK_PATH)[0].json()["text"].startswith("Rollback blocked")


def test_an_aborted_rollback_is_announced_with_the_abort_reason_and_what_to_check(http, tmp_path, monkeypatch):
    monkeypatch.setenv(SLACK_SECRET_ENV, http.url + SLACK_PATH)
    http.answer(SLACK_PATH, SLACK_OK)
    cfg = _manifest(notify={"channels": [{"kind": "slack", "url_env": SLACK_SECRET_ENV, "events": ["aborted"]}]})
    rep = _report()
    aborted = reportlib.build(
        {"app": "shop", "from_version": "2.0.0", "to_version": "1.9.3", "reason": "checkout errors"},
        None,
        {"assess": {"status": "ok"}, "feature_flags": {"status": "ok"}},
        run_id=rep["run_id"],
        aborted=True,
        abort_reason="stopped by the operator before stage code_config",
    )
    followup.announce(str(tmp_path), cfg["notify"], "started", aborted)  # not in this channel's events
    followup.announce(str(tmp_path), cfg["notify"], aborted["exit_state"], aborted)
    (req,) = http.to(SLACK_PATH)
    text = req.json()["text"]
    assert text.startswith("Rollback aborted: shop 2.0.0 -> 1.9.3")
    assert "Reason: checkout errors. aborted: stopped by the operator before stage code_config" in text
    assert "Required action: Check the hosts listed above." in text


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"notify": {"channels": [{"kind": "pager"}]}}, "notify.channels[0].kind must be one of slack, email, webhook"),
        (
            {"notify": {"channels": [{"kind": "email", "host": "smtp", "from": "a@b.c", "to": ["nobody"]}]}},
            "notify.channels[0].to must be a list of e-mail addresses",
        ),
        (
            {"notify": {"channels": [{"kind": "webhook", "url": "https://user:pw@hooks.example.com/x"}]}},
            "notify.channels[0].url must not hold credentials",
        ),
        (
            {"notify": {"channels": [{"kind": "slack", "url_env": "ROLLBACK_SLACK", "events": ["finished"]}]}},
            "notify.channels[0].events must list some of",
        ),
        ({"rca": {"kind": "jira", "url": "https://jira.example.com", "project": "OPS"}}, "rca.token_env is missing"),
        (
            {"rca": {"kind": "jira", "url": "https://j.example.com", "project": "OPS", "api": 4, "token_env": "T"}},
            "rca.api must be 2 (Jira Server/Data Center) or 3 (Jira Cloud)",
        ),
        ({"rca": {"kind": "github", "repo": "shop", "token_env": "T"}}, "rca.repo must be OWNER/REPOSITORY"),
        ({"rca": {"kind": "servicenow"}}, "rca.kind must be one of jira, github, webhook"),
    ],
)
def test_a_bad_notify_or_rca_section_is_one_sentence_naming_the_key(section, message):
    with pytest.raises(manifestlib.ManifestError) as err:
        _manifest(**section)
    assert str(err.value).startswith(message)
