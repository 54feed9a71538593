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


def _every_format(rep):
    render = content.module_utils("report_render")
    return {fmt: render.RENDERERS[fmt](rep) for fmt in ("md", "html", "json", "text")}


def test_a_stage_not_reached_after_a_halt_has_no_rule_and_no_duration():
    results = _results()
    for name in ("database", "infrastructure", "validate"):
        results[name] = {
            "stage": name,
            "status": "skipped",
            "reached": False,
            "summary": "stage code_config failed and halts the rollback",
            "started": "2026-11-26T10:00:40Z",
            "ended": "2026-11-26T10:00:40Z",
        }
    rep = report.build(PLAN, None, results)
    lims = [x for x in rep["known_limitations"] if x.startswith(("database", "infrastructure", "validate"))]
    assert lims == [
        f"{n}: stage code_config failed and halts the rollback" for n in ("database", "infrastructure", "validate")
    ]
    step = next(s for s in rep["steps"] if s["stage"] == "database")
    assert step["duration_s"] is None
    assert "| database | skipped | 2026-11-26T10:00:40Z | 2026-11-26T10:00:40Z |  |" in report.render_markdown(rep)


def test_a_failed_config_file_reads_not_restored_in_every_format():
    results = _results()
    results["code_config"] = dict(results["feature_flags"], stage="code_config")
    results["infrastructure"] = {
        "stage": "infrastructure",
        "status": "failed",
        "summary": "failed on lb1: validation failed",
        "hosts": {"lb1": {"status": "failed", "msg": "validation failed"}},
        "infrastructure": {
            "kind": "config_file",
            "path": "/etc/lb/up.conf",
            "snapshot": "/etc/lb/releases/1.9.conf",
            "restored": False,
            "error": "line 2 is not 'server IP:PORT;'",
        },
    }
    for fmt, text in _every_format(report.build(PLAN, None, results)).items():
        assert "/etc/lb/up.conf not restored" in text, fmt
        assert "restored from" not in text, fmt
        assert "line 2 is not" in text.replace("&#x27;", "'").replace("\\u0027", "'"), fmt


def test_a_restore_point_and_further_backups_of_the_database_stage_are_facts_of_every_format():
    results = _results()
    results["database"] = {
        "stage": "database",
        "status": "ok",
        "summary": "ok on 1 host(s)",
        "hosts": {"db1": {"status": "ok", "msg": "at a1"}},
        "database": {
            "tool": "alembic",
            "from_revision": "b2",
            "to_revision": "a1",
            "current": "a1",
            "applied": ["b2 -> a1"],
            "backups": [
                {
                    "path": "/backups/first.dump",
                    "sha256": "sha256:1111",
                    "restore_command": "pg_restore -d shop /backups/first.dump",
                },
                {
                    "path": "/backups/retry.dump",
                    "sha256": "sha256:2222",
                    "restore_command": "pg_restore -d shop /backups/retry.dump",
                },
            ],
            "restore_point": {
                "path": "/backups/point.dump",
                "sha256": "sha256:3333",
                "verified": True,
                "restore_command": "pg_restore -d shop /backups/point.dump",
                "revision": "b2",
            },
        },
    }
    rendered = _every_format(report.build(PLAN, None, results))
    for fmt, text in rendered.items():
        for fact in ("/backups/first.dump", "sha256:2222", "pg_restore -d shop /backups/point.dump", "sha256:3333"):
            assert fact in text, (fmt, fact)
    assert rendered["md"].count("pg_restore") == rendered["html"].count("pg_restore") == 3


def test_time_to_restore_counts_from_the_approval_and_names_what_was_never_reached():
    approval = {"approver": "alice", "time": "2026-11-26T10:00:04Z"}
    spans = {"code_config": {"web1": {"started": "2026-11-26T10:00:06.5+00:00", "ended": "2026-11-26T10:00:12+00:00"}}}
    rep = report.build(PLAN, approval, _results(), host_spans=spans)
    ttr = rep["time_to_restore"]
    assert ttr["first_host_restored"]["seconds"] == 8.0  # web1's work ended at 10:00:12
    assert ttr["all_hosts_restored"] == {"at": None, "seconds": None, "why": "not every host was restored"}
    assert ttr["validated"]["seconds"] is None and ttr["validated"]["why"] == "validation did not run"
    line = (
        "Time to restore from the approval at 2026-11-26T10:00:04.000Z: first host restored 8.0 s, "
        "every host restored: not every host was restored, validated: validation did not run."
    )
    for text in _every_format(rep).values():
        assert line in text

    results = _results()
    results["code_config"].update(status="ok", hosts={h: {"status": "ok"} for h in ("web1", "web2")})
    results["validate"] = {"stage": "validate", "status": "ok", "started": "2026-11-26T10:00:41Z"}
    results["validate"].update(ended="2026-11-26T10:00:50Z", hosts={})
    ttr = report.build(PLAN, approval, results, host_spans=spans)["time_to_restore"]
    assert ttr["first_host_restored"]["seconds"] == 8.0
    assert ttr["all_hosts_restored"]["seconds"] == 36.0  # web2 had no events: the stage's end, 10:00:40
    assert ttr["validated"] == {"at": "2026-11-26T10:00:50.000Z", "seconds": 46.0, "why": None}
