"""The report renderer on a partial rollback: what failed, where the time went, escaping."""

from __future__ import annotations

from release_rollback import content

report = content.module_utils("report")


def _results():
    def ok(stage, start, end, hosts):
        return {
            "stage": stage,
            "status": "ok",
            "summary": "ok",
            "started": start,
            "ended": end,
            "hosts": {h: {"status": "ok", "msg": "fine"} for h in hosts},
        }

    return {
        "assess": ok("assess", "2026-11-26T10:00:00Z", "2026-11-26T10:00:03Z", []),
        "feature_flags": ok("feature_flags", "2026-11-26T10:00:04Z", "2026-11-26T10:00:05Z", ["localhost"]),
        "code_config": {
            "stage": "code_config",
            "status": "failed",
            "summary": "failed on web2: health check answered 500",
            "started": "2026-11-26T10:00:05Z",
            "ended": "2026-11-26T10:00:40Z",
            "hosts": {
                "web1": {"status": "ok", "msg": "switched"},
                "web2": {"status": "failed", "msg": "health check answered 500 <b>"},
            },
        },
    }


PLAN = {"app": "shop", "from_version": "2.0", "to_version": "1.9", "reason": "<script>alert(1)</script>"}


def test_html_shows_the_failed_host_and_the_longest_stage_and_escapes_input():
    spans = {"code_config": {"web1": {"started": "2026-11-26T10:00:06.5+00:00", "ended": "2026-11-26T10:00:12+00:00"}}}
    rep = report.build(PLAN, None, _results(), host_spans=spans)
    page = report.render_html(rep)
    assert rep["exit_state"] == "partially completed"
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Most time: code_config (35.0 s)." in page
    assert "code_config on web2: failed (health check answered 500 &lt;b&gt;)" in page
    assert 'data-stage="database" data-status="not run"' in page
    web1 = next(h for h in rep["timeline"][2]["hosts"] if h["host"] == "web1")
    assert web1["duration_s"] == 5.5  # from the events, not the stage's second-resolution stamps
    assert "awaiting sign-off" in page


def test_host_spans_count_only_the_work_play():
    events = [  # "t..." sort like the ISO stamps they stand for
        {"event": "runner_on_start", "host": "localhost", "play": "Stage code_config: gate", "created": "t0"},
        {"event": "runner_on_start", "host": "web1", "play": "Stage code_config: switch", "created": "t1"},
        {"event": "runner_on_failed", "host": "web1", "play": "Stage code_config: switch", "created": "t3"},
        {"event": "runner_on_ok", "host": "localhost", "play": "Stage code_config: publish the result", "created": "t"},
    ]
    assert report.host_spans(events) == {"web1": {"started": "t1", "ended": "t3", "failed": True, "tasks": 1}}


def test_signoff_and_rca_lines_in_markdown():
    signed = {"by": "Rita", "time": "2026-11-26T11:00:00Z"}
    rca = {"status": "pending", "error": "Jira answered 503"}
    md = report.render_markdown(report.build(PLAN, None, _results(), signoff=signed, rca=rca))
    assert "- **Sign-off:** signed off by Rita at 2026-11-26T11:00:00Z" in md
    assert "RCA pending (Jira answered 503): retry with `release-rollback rca RUN_DIR`" in md
