"""Manifest sections, plan steps, stage outcome and report lines of the infrastructure and validate stages."""

from __future__ import annotations

import pytest
from release_rollback import content

manifest = content.module_utils("manifest")
planlib = content.module_utils("plan")
stages = content.module_utils("stages")
report = content.module_utils("report")


def parse(**sections):
    return manifest.parse_manifest({"app": "shop", "version": "2", **sections})


def test_config_file_section_keeps_verification_keys():
    infra = parse(
        infrastructure={
            "path": "/etc/nginx/conf.d/up.conf",
            "snapshot": "/etc/nginx/releases/{version}.conf",
            "validate_command": "nginx -t",
            "verify_url": "http://127.0.0.1/version",
            "verify_contains": "{version}",
        }
    )["infrastructure"]
    assert infra["kind"] == "config_file" and infra["verify_url"] == "http://127.0.0.1/version"


def test_terraform_and_tasks_sections_are_parsed_with_defaults():
    tf = parse(infrastructure={"kind": "terraform", "project_path": "/srv/infra/{version}", "binary": "tofu"})
    assert tf["infrastructure"] == {
        "kind": "terraform", "project_path": "/srv/infra/{version}", "binary": "tofu", "workspace": None, "init": True,
    }  # fmt: skip
    tasks = parse(infrastructure={"kind": "tasks", "file": "/repo/rollback/{version}.yml"})
    assert tasks["infrastructure"] == {"kind": "tasks", "file": "/repo/rollback/{version}.yml"}


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"kind": "terraform", "project_path": "infra"}, "absolute path"),
        ({"kind": "terraform", "project_path": "/i", "binary": "rm -rf /"}, "command name"),
        ({"kind": "tasks"}, "infrastructure.file is missing"),
        ({"kind": "pulumi"}, "not supported"),
        ({"path": "/a", "snapshot": "/b/{version}", "verify_url": "ftp://x"}, "http:// or https://"),
    ],
)
def test_bad_infrastructure_sections_are_one_sentence_errors(section, message):
    with pytest.raises(manifest.ManifestError, match=message):
        parse(infrastructure=section)


def test_validation_monitoring_sections_are_normalised():
    val = parse(
        validation={
            "smoke": [{"command": ["curl", "-f", "http://x"], "timeout": 3}, {"url": "http://x/", "status": 204}],
            "prometheus": {"url": "http://p:9090/", "queries": [{"name": "err", "query": "x", "max": 0.1}]},
            "alertmanager": {"url": "http://a:9093"},
        }
    )["validation"]
    assert val["smoke"][0] == {
        "command": ["curl", "-f", "http://x"],
        "timeout": 3,
        "name": "['curl', '-f', 'http://x']",
    }
    assert val["smoke"][1]["status"] == 204
    assert val["prometheus"]["url"] == "http://p:9090"
    assert val["prometheus"]["queries"] == [{"name": "err", "query": "x", "max": 0.1, "empty": "fail"}]
    assert val["alertmanager"]["matchers"] == ['service="shop"']


@pytest.mark.parametrize(
    ("validation", "message"),
    [
        ({"prometheus": {"url": "http://p", "queries": [{"query": "x"}]}}, "exactly one threshold"),
        ({"prometheus": {"url": "http://p", "queries": [{"query": "x", "max": 1, "min": 0}]}}, "exactly one"),
        ({"prometheus": {"url": "http://p", "queries": []}}, "non-empty list"),
        ({"alertmanager": {"url": "http://a", "matchers": ["service"]}}, 'label="value"'),
        ({"smoke": [{"command": "true", "timeout": 0}]}, "timeout must be a number"),
        ({"grafana": {}}, "unknown key validation.grafana"),
        ({"prometheus": {"url": "http://u:secret@p", "queries": [{"query": "x", "max": 1}]}}, "user or password"),
    ],
)
def test_bad_validation_sections_are_one_sentence_errors(validation, message):
    with pytest.raises(manifest.ManifestError, match=message):
        parse(validation=validation)


def _plan(**sections):
    facts = {"web1": {"live": "2", "previous": "1", "releases": ["1", "2"]}}
    return planlib.build_plan(parse(**sections), facts)


def test_plan_steps_name_the_terraform_path_and_the_destroy_rule():
    plan = _plan(infrastructure={"kind": "terraform", "project_path": "/srv/infra/{version}"})
    step = next(s for s in plan["steps"] if s["stage"] == "infrastructure")
    assert "/srv/infra/1" in step["action"] and "destructive" in step["action"]
    assert any("--destructive" in r for r in plan["risks"])


def test_plan_validate_step_lists_the_monitoring_checks():
    plan = _plan(
        validation={
            "prometheus": {"url": "http://p", "queries": [{"query": "x", "max": 1}]},
            "alertmanager": {"url": "http://a"},
        }
    )
    step = next(s for s in plan["steps"] if s["stage"] == "validate")
    assert "1 Prometheus" in step["action"] and 'service="shop"' in step["action"]


def test_a_failed_service_check_fails_the_stage_without_blaming_a_host():
    checks = [
        {"kind": "prometheus", "name": "errors", "ok": False, "msg": "3.0 is above the threshold 0.0"},
        {"kind": "alertmanager", "name": "alerts", "ok": True, "msg": ""},
    ]
    result = stages.aggregate("validate", {"web1": {"status": "ok"}}, ["web1"], extra={"checks": checks})
    assert result["status"] == "failed"
    assert result["summary"] == "checks failed: prometheus errors: 3.0 is above the threshold 0.0"
    assert result["hosts"]["web1"]["status"] == "ok"
    passing = stages.aggregate("validate", {"web1": {"status": "ok"}}, ["web1"], extra={"checks": checks[1:]})
    assert passing["status"] == "ok"


def test_report_renders_checks_and_terraform_summary():
    results = {
        "assess": {"status": "ok"},
        "infrastructure": {
            "status": "failed",
            "infrastructure": {
                "kind": "terraform",
                "path": "/srv/infra/1",
                "restored": False,
                "plan_summary": {"add": 0, "change": 1, "destroy": 1, "resources": [
                    {"address": "aws_instance.canary", "actions": ["delete"]}]},
                "error": "the plan destroys 1 resource(s)",
            },
        },
        "validate": {
            "status": "failed",
            "checks": [{"kind": "prometheus", "name": "err|rate", "value": 0.2, "threshold": "<= 0.05", "ok": False,
                        "msg": "0.2 is above the threshold 0.05", "time": "2026-11-26T00:00:00Z"}],
        },
    }  # fmt: skip
    text = report.render_markdown(report.build({}, None, results))
    assert "0 to add, 1 to change, 1 to destroy; not applied" in text
    assert "`aws_instance.canary`: delete" in text
    assert (
        "| err\\|rate | prometheus | 0.2 | <= 0.05 | FAIL: 0.2 is above the threshold 0.05 | 2026-11-26T00:00:00Z |"
        in text
    )


def test_validation_is_stale_when_a_changing_stage_ran_after_it():
    results = {
        "infrastructure": {"status": "failed", "changed": False, "started": "T10", "ended": "T11"},
        "validate": {"status": "ok", "started": "T12", "ended": "T13"},
    }
    assert stages.stale_validation(results) is False
    results["infrastructure"] = {"status": "ok", "changed": True, "started": "T20", "ended": "T21"}
    assert stages.stale_validation(results) is True
    results["infrastructure"]["changed"] = False  # re-ran but changed nothing
    assert stages.stale_validation(results) is False
