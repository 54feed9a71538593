"""The infrastructure stage's Terraform/OpenTofu path, through an executable that speaks terraform's verbs.

The bad release's configuration is applied (the state says so); rolling back plans the previous
release's configuration against that state. The plan summary lands in the run record, and a plan
that destroys resources is applied only with an approval of destructive steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from infra_services import infra_manifest
from release_rollback.demo import BAD, GOOD

pytestmark = pytest.mark.integration

FAKE_TERRAFORM = Path(__file__).resolve().parent / "bin" / "terraform"


def resources(**named: dict) -> dict:
    return {"null_resource": named}


@pytest.fixture
def infra(tmp_path, monkeypatch):
    """Per-release configurations sharing one state; the bad release's is applied."""
    root = tmp_path / "infra"
    state = root / "terraform.tfstate.json"
    log = tmp_path / "terraform-calls.jsonl"
    monkeypatch.setenv("FAKE_TF_LOG", str(log))

    def release(version: str, res: dict) -> None:
        (root / "releases" / version).mkdir(parents=True)
        doc = {"terraform": {"backend": {"local": {"path": str(state)}}}, "resource": res}
        (root / "releases" / version / "main.tf.json").write_text(json.dumps(doc, indent=2))

    def applied(res: dict) -> None:
        flat = {f"{t}.{n}": body for t, named in res.items() for n, body in named.items()}
        state.write_text(json.dumps({"version": 4, "resources": flat}))

    def state_resources() -> dict:
        return json.loads(state.read_text())["resources"]

    def calls() -> list[list[str]]:
        return [json.loads(line)["argv"] for line in log.read_text().splitlines()] if log.exists() else []

    return type(
        "Infra",
        (),
        {"root": root, "release": staticmethod(release), "applied": staticmethod(applied),
         "state": staticmethod(state_resources), "calls": staticmethod(calls)},
    )  # fmt: skip


def section(infra) -> dict:
    return {
        "kind": "terraform",
        "project_path": str(infra.root / "releases" / "{version}"),
        "binary": str(FAKE_TERRAFORM),
    }


def run_infra(cli, fleet, manifest):
    return cli(
        "run", "-i", str(fleet.inventory), "-m", str(manifest), "--scope", "infrastructure",
        "--approver", "alice", "--yes", "--json",
    )  # fmt: skip


def infra_result(run_dir) -> dict:
    return json.loads((run_dir / "state.json").read_text())["stages"]["infrastructure"]["result"]


def test_terraform_plan_summary_is_recorded_and_a_plan_without_destroys_is_applied(cli, fleet, infra, tmp_path):
    bad = resources(web={"triggers": {"release": BAD, "instances": 4}})
    good = resources(
        web={"triggers": {"release": GOOD, "instances": 3}}, dns={"triggers": {"record": "shop.example.com"}}
    )
    infra.release(BAD, bad)
    infra.release(GOOD, good)
    infra.applied(bad)

    proc = run_infra(cli, fleet, infra_manifest(fleet, section(infra), tmp_path / "manifest.yml"))

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert infra.state() == {f"null_resource.{n}": b for n, b in good["null_resource"].items()}
    run_dir = cli.run_dirs()[-1]
    result = infra_result(run_dir)["infrastructure"]
    assert result["plan_summary"]["add"] == 1
    assert result["plan_summary"]["change"] == 1
    assert result["plan_summary"]["destroy"] == 0
    assert result["restored"] is True and result["version"] == "1.9.8"
    assert result["path"] == str(infra.root / "releases" / GOOD)
    verbs = [c[0] for c in infra.calls()]
    assert verbs == ["version", "init", "plan", "show", "apply", "output"]
    plan_call, apply_call = infra.calls()[2], infra.calls()[4]
    assert "-detailed-exitcode" in plan_call
    planfile = next(a for a in plan_call if a.startswith("-out=")).split("=", 1)[1]
    assert apply_call[-1] == planfile  # exactly the plan that was summarised
    report = (run_dir / "report.md").read_text()
    assert "1 to add, 1 to change, 0 to destroy; applied" in report
    assert "`null_resource.dns`: create" in report


def test_terraform_plan_that_destroys_is_refused_without_destructive_approval_then_applied_with_it(
    cli, fleet, infra, tmp_path
):
    bad = resources(web={"triggers": {"release": BAD}}, canary={"triggers": {"weight": 10}})
    good = resources(web={"triggers": {"release": GOOD}})
    infra.release(BAD, bad)
    infra.release(GOOD, good)
    infra.applied(bad)
    before = infra.state()

    proc = run_infra(cli, fleet, infra_manifest(fleet, section(infra), tmp_path / "manifest.yml"))

    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["stages"]["infrastructure"] == "failed"
    assert infra.state() == before
    assert "apply" not in [c[0] for c in infra.calls()]
    run_dir = cli.run_dirs()[-1]
    result = infra_result(run_dir)
    assert "destroys 1 resource(s) (null_resource.canary)" in result["summary"]
    assert "--destructive" in result["summary"]
    summary = result["infrastructure"]["plan_summary"]
    assert (summary["add"], summary["change"], summary["destroy"]) == (0, 1, 1)
    report = (run_dir / "report.md").read_text()
    assert "0 to add, 1 to change, 1 to destroy; not applied" in report

    approve = cli("approve", str(run_dir / "plan.yml"), "--approver", "bob", "--destructive", "--reason", "canary")
    assert approve.returncode == 0, approve.stderr
    proc = cli("resume", str(run_dir), "--json")

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert infra.state() == {"null_resource.web": good["null_resource"]["web"]}
    assert infra_result(run_dir)["infrastructure"]["restored"] is True
    audit = [json.loads(line) for line in (run_dir / "audit.jsonl").read_text().splitlines()]
    assert any(e.get("event") == "approval.recorded" and e.get("destructive") is True for e in audit)
