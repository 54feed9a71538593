"""The validate stage against a real Prometheus and Alertmanager scraping the demo fleet's /metrics.

The bad release answered /health with 500s; Prometheus saw them (demo_requests_total{code="500"}),
and a rule turns "errors in the last 10 minutes" into an alert for the service in Alertmanager.
"""

from __future__ import annotations

import json
import os

import pytest
from infra_services import ALERTMANAGER_TEMPLATES, Alertmanager, Prometheus, http_get, monitoring_binary, wait_for
from release_rollback import demo_service
from release_rollback.demo import BAD, GOOD

pytestmark = pytest.mark.integration

RULES = """
groups:
  - name: demo-shop
    rules:
      - alert: DemoShopErrors
        expr: sum(max_over_time(demo_requests_total{code="500"}[10m])) > 0
        labels: {service: demo-shop, severity: page}
        annotations: {summary: the shop answered 500 in the last 10 minutes}
"""
ERRORS = 'sum(max_over_time(demo_requests_total{code="500"}[10m]))'


@pytest.fixture
def monitoring(fleet, tmp_path, need):
    for name in ("prometheus", "prometheus-alertmanager"):
        need(monitoring_binary(name) is not None, f"{name} (Debian package extracted by .ci/run)")
    need(ALERTMANAGER_TEMPLATES.is_file(), f"{ALERTMANAGER_TEMPLATES} (copied from the package by .ci/run)")
    am = Alertmanager(tmp_path / "alertmanager").start()
    prom = Prometheus(
        tmp_path / "prometheus", list(fleet.ports.values()), alertmanager_port=am.port, rules=RULES
    ).start()
    try:
        # The bad release serves errors; Prometheus scrapes them and the rule fires.
        for port in fleet.ports.values():
            for _ in range(3):
                assert http_get(f"http://127.0.0.1:{port}/health")[0] == 500
        prom.wait_scraped()
        wait_for(lambda: prom.query(f"{ERRORS} >= 9"), timeout=60, delay=0.5, what="Prometheus to see the errors")
        yield prom, am
    finally:
        prom.stop()
        am.stop()


def manifest(fleet, tmp_path, validation: dict):
    import yaml

    doc = yaml.safe_load(fleet.manifest.read_text())["rollback_manifest"]
    doc = {k: doc[k] for k in ("app", "version", "reason")}
    doc["validation"] = {"retries": 20, "delay": 0.25, "timeout": 5, **validation}
    path = tmp_path / "manifest.yml"
    path.write_text(yaml.safe_dump({"rollback_manifest": doc}, sort_keys=False))
    return path


def rollback(cli, fleet, manifest_file, *scope: str):
    args = ["run", "-i", str(fleet.inventory), "-m", str(manifest_file), "--approver", "alice", "--yes", "--json"]
    for name in scope or ("code_config", "validate"):
        args += ["--scope", name]
    return cli(*args)


def validate_result(run_dir) -> dict:
    return json.loads((run_dir / "state.json").read_text())["stages"]["validate"]["result"]


def test_prometheus_query_over_its_threshold_fails_validation_with_value_and_threshold(
    cli, fleet, monitoring, tmp_path
):
    prom, _am = monitoring
    validation = {
        "prometheus": {
            "url": prom.url,
            "queries": [
                {"name": "all instances up", "query": 'sum(up{job="demo-shop"})', "min": 3},
                {"name": "errors in the last 10 minutes", "query": ERRORS, "max": 0},
            ],
        }
    }

    proc = rollback(cli, fleet, manifest(fleet, tmp_path, validation))

    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["stages"] == {
        "assess": "ok", "feature_flags": "skipped", "code_config": "ok", "database": "skipped",
        "infrastructure": "skipped", "validate": "failed", "report": "ok",
    }  # fmt: skip
    assert {fleet.live(h) for h in fleet.hosts} == {f"./releases/{GOOD}"}
    result = validate_result(cli.run_dirs()[-1])
    assert {h: r["status"] for h, r in result["hosts"].items()} == {"web1": "ok", "web2": "ok", "web3": "ok"}
    checks = {c["name"]: c for c in result["checks"]}
    assert checks["all instances up"]["ok"] is True and checks["all instances up"]["value"] == 3
    errors = checks["errors in the last 10 minutes"]
    assert errors["ok"] is False and errors["value"] >= 9 and errors["threshold"] == "<= 0"
    assert errors["time"].endswith("Z") and errors["kind"] == "prometheus"
    assert "errors in the last 10 minutes" in result["summary"]
    report = (cli.run_dirs()[-1] / "report.md").read_text()
    assert "## Validation checks" in report and "errors in the last 10 minutes" in report and "<= 0" in report
    rep = json.loads((cli.run_dirs()[-1] / "report.json").read_text())
    assert [c["name"] for c in rep["checks"]] == ["all instances up", "errors in the last 10 minutes"]


def test_active_alert_fails_validation_and_once_silenced_resume_completes(cli, fleet, monitoring, tmp_path):
    prom, am = monitoring
    wait_for(
        lambda: am.alerts(active="true", silenced="false", filter='service="demo-shop"'),
        timeout=60,
        delay=0.5,
        what="the DemoShopErrors alert to reach Alertmanager",
    )
    validation = {
        "prometheus": {"url": prom.url, "queries": [{"query": 'sum(up{job="demo-shop"})', "min": 3}]},
        "alertmanager": {"url": am.url},  # matchers default to service="<app>"
    }

    proc = rollback(cli, fleet, manifest(fleet, tmp_path, validation))

    assert proc.returncode == 5, proc.stdout + proc.stderr
    run_dir = cli.run_dirs()[-1]
    result = validate_result(run_dir)
    alert = next(c for c in result["checks"] if c["kind"] == "alertmanager")
    assert alert["ok"] is False and alert["value"] == 1 and alert["alerts"] == ["DemoShopErrors"]
    assert alert["target"] == 'service="demo-shop"'
    assert "firing: DemoShopErrors" in result["summary"]

    # Mitigation: the on-call silences the known alert; validation alone is re-run.
    am.silence({"alertname": "DemoShopErrors", "service": "demo-shop"})
    code_config_before = json.loads((run_dir / "state.json").read_text())["stages"]["code_config"]["result"]
    proc = cli("resume", str(run_dir), "--json")

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["exit_state"] == "completed"
    state = json.loads((run_dir / "state.json").read_text())
    assert state["stages"]["code_config"]["result"] == code_config_before  # not run again
    alert = next(c for c in validate_result(run_dir)["checks"] if c["kind"] == "alertmanager")
    assert alert["ok"] is True and alert["value"] == 0 and alert["silenced"] == ["DemoShopErrors"]
    assert am.alerts(active="true", silenced="false", filter='service="demo-shop"') == []
    assert am.alerts(active="false", silenced="true", filter='service="demo-shop"')  # still there, silenced


def test_a_host_still_on_the_bad_release_fails_validation_and_is_named(cli, fleet, tmp_path):
    plan = cli("plan", "-i", str(fleet.inventory), "-m", str(fleet.manifest), "--scope", "validate", "--json")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    run_dir = cli.run_dirs()[-1]
    # web1 and web2 were switched back by hand; web3 still runs the bad release.
    for host in ("web1", "web2"):
        app = fleet.app_root(host)
        os.replace(_relink(app, GOOD), app / "current")
        assert demo_service.main(["restart", str(fleet.hosts[host])]) == 0
    assert cli("approve", str(run_dir / "plan.yml"), "--approver", "alice").returncode == 0

    proc = cli("run", str(run_dir / "plan.yml"), "--json")

    assert proc.returncode == 5, proc.stdout + proc.stderr
    result = validate_result(run_dir)
    assert {h: r["status"] for h, r in result["hosts"].items()} == {"web1": "ok", "web2": "ok", "web3": "failed"}
    assert "web3" in result["summary"] and BAD in result["summary"]
    assert "web1" not in result["summary"] and "web2" not in result["summary"]
    report = (run_dir / "report.md").read_text()
    assert "| web3 | failed |" in report


def _relink(app, version):
    tmp = app / ".current-test"
    os.symlink(f"./releases/{version}", tmp)
    return tmp
